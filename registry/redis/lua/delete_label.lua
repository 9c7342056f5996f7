-- delete_label: remove a label, with optional compare-and-set.
--
-- KEYS[1] {ns}:p:<name>               the prompt's hash
-- KEYS[2] {ns}:p:<name>:label:<label> the label
-- KEYS[3] {ns}:p:<name>:labels        set of the prompt's labels
-- KEYS[4] {ns}:p:<name>:prev:<label>  rollback target (set to the deleted position, which is also
--                                      what set_label checks the label's next move against)
-- KEYS[5] {ns}:rev                    global revision
-- KEYS[6] {ns}:log                    registry-wide audit stream
-- KEYS[7] {ns}:p:<name>:log           the prompt's audit stream
-- KEYS[8] {ns}:ix:label:<label>        index: name -> version for this label
-- KEYS[9] {ns}:ix:labels               index: label names with entries
-- KEYS[10] {ns}:p:<name>:rollout:<label>  the label's rollout: a plain move is refused while it runs
-- KEYS[11] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[12] {ns}:revid                  the id of the registry's last write (_commit.lua)
-- ARGV[1] name
-- ARGV[2] label
-- ARGV[3] expected version ('' = no check)
-- ARGV[4] at (ISO 8601, UTC)
-- ARGV[5] author ('' = none)
-- ARGV[6] reason ('' = none)
-- ARGV[7] message head (msgpack, packed by Python)
-- ARGV[8] channel
-- ARGV[9] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[10] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[11] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[12] this write's id (16 hex digits, random)
-- ARGV[13] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev, previous} or {'ERR', 'NOPROMPT' | 'NOLABEL' | 'CONFLICT', actual}.

local refused = direct_move_guard(KEYS[1], KEYS[5], KEYS[10], ARGV[1], ARGV[2])
if refused then
  return refused
end
local current = redis.call('GET', KEYS[2])
if not current then
  return {'ERR', 'NOLABEL'}
end
current = tonumber(current)
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= current then
  return {'ERR', 'CONFLICT', current}
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[8], ARGV[1])
if redis.call('HLEN', KEYS[8]) == 0 then
  redis.call('SREM', KEYS[9], ARGV[2])
end
redis.call('SET', KEYS[4], current)
local rev = commit(KEYS[5], KEYS[6], KEYS[7], ARGV[8], ARGV[7],
  {'at', ARGV[4], 'action', 'delete_label', 'prompt', ARGV[1], 'label', ARGV[2], 'author', ARGV[5],
   'reason', ARGV[6]},
  false, current, false)
return reply({'OK', rev, current})
