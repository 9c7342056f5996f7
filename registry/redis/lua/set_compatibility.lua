-- set_compatibility: set a prompt's compatibility mode (which label moves set_label/rollback accept).
--
-- KEYS[1] {ns}:p:<name>         the prompt's hash (field 'compatibility'; absent = 'none')
-- KEYS[2] {ns}:rev              global revision
-- KEYS[3] {ns}:log              registry-wide audit stream
-- KEYS[4] {ns}:p:<name>:log     the prompt's audit stream
-- KEYS[5] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[6] {ns}:revid                  the id of the registry's last write (_commit.lua)
-- ARGV[1] name
-- ARGV[2] mode ('none', 'backward' or 'full'; validated by Python)
-- ARGV[3] at (ISO 8601, UTC)
-- ARGV[4] author ('' = none)
-- ARGV[5] reason ('' = none)
-- ARGV[6] message head (msgpack, packed by Python)
-- ARGV[7] channel
-- ARGV[8] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[9] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[10] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[11] this write's id (16 hex digits, random)
-- ARGV[12] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev} or {'ERR', 'NOPROMPT'}.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ERR', 'NOPROMPT'}
end
redis.call('HSET', KEYS[1], 'compatibility', ARGV[2])
local rev = commit(KEYS[2], KEYS[3], KEYS[4], ARGV[7], ARGV[6],
  {'at', ARGV[3], 'action', 'set_compatibility', 'prompt', ARGV[1], 'author', ARGV[4], 'reason', ARGV[5],
   'compatibility', ARGV[2]},
  false, false, false)
return reply({'OK', rev})
