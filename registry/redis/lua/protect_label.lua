-- protect_label: protect a label (its moves need an approved request) or remove the protection.
-- The admin role's write: {ns}:adm:* is a key only admin may write.
--
-- KEYS[1] {ns}:p:<name>               the prompt's hash
-- KEYS[2] {ns}:adm:protected          '<name>:<label>' -> approvals
-- KEYS[3] {ns}:gov:ix                 '<name>:<label>' -> version: where a protected label points
-- KEYS[4] {ns}:p:<name>:label:<label> the label
-- KEYS[5] {ns}:ix:label:<label>       index: name -> version for this label
-- KEYS[6] {ns}:p:<name>:rollout:<label>  the label's rollout: no protection while it runs
-- KEYS[7] {ns}:rev                    global revision
-- KEYS[8] {ns}:log                    registry-wide audit stream
-- KEYS[9] {ns}:p:<name>:log           the prompt's audit stream
-- KEYS[10] {ns}:p:<name>:labels       set of the prompt's labels
-- KEYS[11] {ns}:ix:labels             index: label names with entries
-- KEYS[12] {ns}:ix:graph              (_commit.lua)
-- KEYS[13] {ns}:revid                 (_commit.lua)
-- ARGV[1] name
-- ARGV[2] label
-- ARGV[3] approvals ('' = remove the protection)
-- ARGV[4] at (ISO 8601, UTC)
-- ARGV[5] author ('' = none)
-- ARGV[6] reason ('' = none)
-- ARGV[7] message head (msgpack, packed by Python)
-- ARGV[8] channel
-- ARGV[9] {ns}:adm:protected (_commit.lua)
-- ARGV[10] the revision the caller checked the composition graph at ('' = none)
-- ARGV[11] the partials a new version includes ('' = none)
-- ARGV[12] this write's id (16 hex digits, random)
-- ARGV[13] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Protecting copies where the label points into {ns}:gov:ix (a label protected already keeps its
-- value there: the p:/ix: keys may have been written by a writer since). Removing the protection
-- writes {ns}:gov:ix's value back to the label's keys, which become the truth again.
-- Returns {'OK', rev, version or false} or {'ERR', 'NOPROMPT' | 'ROLLOUT' | 'NOTPROTECTED'}.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ERR', 'NOPROMPT'}
end
local field = ARGV[1] .. ':' .. ARGV[2]
local was = redis.call('HEXISTS', KEYS[2], field) == 1
local current
if ARGV[3] ~= '' then
  local rollout = redis.call('HGET', KEYS[6], 'candidate')
  if rollout then
    return {'ERR', 'ROLLOUT', tonumber(rollout)}
  end
  if was then
    current = redis.call('HGET', KEYS[3], field)
  else
    current = redis.call('GET', KEYS[4])
    if current then
      redis.call('HSET', KEYS[3], field, current)
    end
  end
  redis.call('HSET', KEYS[2], field, ARGV[3])
else
  if not was then
    return {'ERR', 'NOTPROTECTED'}
  end
  current = redis.call('HGET', KEYS[3], field)
  if current then
    redis.call('SET', KEYS[4], current)
    redis.call('HSET', KEYS[5], ARGV[1], current)
    redis.call('SADD', KEYS[10], ARGV[2])
    redis.call('SADD', KEYS[11], ARGV[2])
  else
    redis.call('DEL', KEYS[4])
    redis.call('HDEL', KEYS[5], ARGV[1])
    redis.call('SREM', KEYS[10], ARGV[2])
  end
  redis.call('HDEL', KEYS[3], field)
  redis.call('HDEL', KEYS[2], field)
end
current = current and tonumber(current) or false
local rev = commit(KEYS[7], KEYS[8], KEYS[9], ARGV[8], ARGV[7],
  {'at', ARGV[4], 'action', ARGV[3] ~= '' and 'protect_label' or 'unprotect_label', 'prompt', ARGV[1],
   'label', ARGV[2], 'author', ARGV[5], 'reason', ARGV[6], 'approvals', ARGV[3]},
  false, false, false)
return reply({'OK', rev, current})
