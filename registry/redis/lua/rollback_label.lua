-- rollback_label: move a label back to where it pointed before its last move.
--
-- KEYS[1] {ns}:p:<name>               the prompt's hash
-- KEYS[2] {ns}:p:<name>:label:<label> the label
-- KEYS[3] {ns}:p:<name>:labels        set of the prompt's labels
-- KEYS[4] {ns}:p:<name>:prev:<label>  the rollback target; becomes the position left
-- KEYS[5] {ns}:rev                    global revision
-- KEYS[6] {ns}:log                    registry-wide audit stream
-- KEYS[7] {ns}:p:<name>:log           the prompt's audit stream
-- KEYS[8] {ns}:ix:label:<label>        index: name -> version for this label
-- KEYS[9] {ns}:ix:labels               index: label names with entries
-- KEYS[10] {ns}:p:<name>:v:<n>          the target version's hash, as the caller read KEYS[4]
-- KEYS[11] {ns}:p:<name>:v:<current>    the version the label points at, as the caller read KEYS[2]
--                                        (any key of the prefix when it read no label)
-- ARGV[1] name
-- ARGV[2] label
-- ARGV[3] version key prefix          {ns}:p:<name>:v:  (same slot)
-- ARGV[4] at (ISO 8601, UTC)
-- ARGV[5] author ('' = none)
-- ARGV[6] reason ('' = none)
-- ARGV[7] message head (msgpack, packed by Python)
-- ARGV[8] channel
-- ARGV[9] force ('1' = move even if the compatibility mode refuses it; recorded as forced)
-- ARGV[10] expected version ('' = no check, '0' = the label must be deleted now)
-- ARGV[11] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[12] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[13] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[14] this write's id (16 hex digits, random)
-- ARGV[15] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev, version, previous or false, forced} or {'ERR', 'NOPROMPT' | 'NOROLLBACK' |
-- 'CORRUPT'}, {'ERR', 'CONFLICT', current or false}, a check_move refusal (_commit.lua), or
-- {'ERR', 'RETRY', target, current or 0} when
-- KEYS[10] or KEYS[11] is not the key the script needs (the label moved): call again with those.
-- KEYS[12] {ns}:p:<name>:rollout:<label>  the label's rollout: a plain move is refused while it runs
-- KEYS[13] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[14] {ns}:revid                  the id of the registry's last write (_commit.lua)

local refused = direct_move_guard(KEYS[1], KEYS[5], KEYS[12], ARGV[1], ARGV[2])
if refused then
  return refused
end
local target = redis.call('GET', KEYS[4])
if not target then
  return {'ERR', 'NOROLLBACK'}
end
target = tonumber(target)
local current = redis.call('GET', KEYS[2])
if current then
  current = tonumber(current)
end
if ARGV[10] ~= '' then
  local expected = tonumber(ARGV[10])
  if (expected == 0 and current) or (expected ~= 0 and current ~= expected) then
    return {'ERR', 'CONFLICT', current or false}
  end
end
local mode = redis.call('HGET', KEYS[1], 'compatibility') or 'none'
local checked = mode ~= 'none' and current and current ~= target
if ARGV[3] .. target ~= KEYS[10] or (checked and ARGV[3] .. current ~= KEYS[11]) then
  return {'ERR', 'RETRY', target, current or 0}
end
if redis.call('EXISTS', KEYS[10]) == 0 then
  return {'ERR', 'CORRUPT'}
end
local forced = ''
if checked then
  local refusal = check_move(mode, current, target, KEYS[11], KEYS[10])
  if refusal then
    if ARGV[9] ~= '1' then
      return refusal
    end
    forced = '1'
  end
end
if current then
  redis.call('SET', KEYS[4], current)
else
  redis.call('DEL', KEYS[4])
end
redis.call('SET', KEYS[2], target)
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[8], ARGV[1], target)
redis.call('SADD', KEYS[9], ARGV[2])
local rev = commit(KEYS[5], KEYS[6], KEYS[7], ARGV[8], ARGV[7],
  {'at', ARGV[4], 'action', 'rollback', 'prompt', ARGV[1], 'label', ARGV[2], 'author', ARGV[5],
   'reason', ARGV[6], 'forced', forced},
  target, current or false, redis.call('HGET', KEYS[10], 'sha256') or false)
return reply({'OK', rev, target, current or false, forced})
