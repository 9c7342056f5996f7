-- create_prompt: register a new, empty prompt.
--
-- KEYS[1] {ns}:prompts          set of prompt names
-- KEYS[2] {ns}:p:<name>         the prompt's hash
-- KEYS[3] {ns}:rev              global revision
-- KEYS[4] {ns}:log              registry-wide audit stream
-- KEYS[5] {ns}:p:<name>:log     the prompt's audit stream
-- KEYS[6] {ns}:ix:format         the index's format marker (set by the registry's first write)
-- KEYS[7] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[8] {ns}:revid                  the id of the registry's last write (_commit.lua)
-- ARGV[1] name
-- ARGV[2] description ('' = none)
-- ARGV[3] author ('' = none)
-- ARGV[4] created_at (ISO 8601, UTC)
-- ARGV[5] message head (msgpack, packed by Python)
-- ARGV[6] channel
-- ARGV[7] compatibility mode ('none', 'backward' or 'full'; 'none' is not stored)
-- ARGV[8] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[9] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[10] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[11] this write's id (16 hex digits, random)
-- ARGV[12] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev} or {'ERR', 'EXISTS'}.

local name = ARGV[1]
if redis.call('SISMEMBER', KEYS[1], name) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return {'ERR', 'EXISTS'}
end
redis.call('HSET', KEYS[2], 'created_at', ARGV[4], 'latest', 0)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'description', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], 'author', ARGV[3])
end
if ARGV[7] ~= 'none' then
  redis.call('HSET', KEYS[2], 'compatibility', ARGV[7])
end
redis.call('SADD', KEYS[1], name)
-- The first write of a new registry: the index (kept by every script) is complete from the start.
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[6], 1)
end
local rev = commit(KEYS[3], KEYS[4], KEYS[5], ARGV[6], ARGV[5],
  {'at', ARGV[4], 'action', 'create_prompt', 'prompt', name, 'author', ARGV[3]}, false, false, false)
return reply({'OK', rev})
