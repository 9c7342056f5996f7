-- rollout: start, change, promote or abort the percentage rollout of a label (registry/rollouts.py).
--
-- KEYS[1] {ns}:p:<name>                  the prompt's hash
-- KEYS[2] {ns}:p:<name>:label:<label>    the label (its version is the rollout's stable version)
-- KEYS[3] {ns}:p:<name>:rollout:<label>  the rollout: candidate, points, started_at, author
-- KEYS[4] {ns}:p:<name>:v:<candidate>    the candidate's version hash (as the caller read it)
-- KEYS[5] {ns}:p:<name>:v:<stable>       the stable version's hash (as the caller read it)
-- KEYS[6] {ns}:rev                       global revision
-- KEYS[7] {ns}:log                       registry-wide audit stream
-- KEYS[8] {ns}:p:<name>:log              the prompt's audit stream
-- KEYS[9] {ns}:ix:label:<label>          index: name -> version for this label
-- KEYS[10] {ns}:ix:rollouts              index: '<name>:<label>' -> '<candidate>:<points>'
-- KEYS[11] {ns}:p:<name>:prev:<label>    the label's rollback target (promote sets it)
-- KEYS[12] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[13] {ns}:revid                  the id of the registry's last write (_commit.lua)
-- ARGV[1] operation: start_rollout, set_rollout, promote_rollout or abort_rollout
-- ARGV[2] name
-- ARGV[3] label
-- ARGV[4] candidate (start: the version to roll out; otherwise the caller's read of the rollout)
-- ARGV[5] stable (the caller's read of the label)
-- ARGV[6] points: the candidate's share in basis points (start, set)
-- ARGV[7] percent, as the audit entry shows it (start, set)
-- ARGV[8] at (ISO 8601, UTC)
-- ARGV[9] author ('' = none)
-- ARGV[10] reason ('' = none)
-- ARGV[11] message head (msgpack, packed by Python)
-- ARGV[12] channel
-- ARGV[13] version key prefix {ns}:p:<name>:v:
-- ARGV[14] force ('1' = start even if the compatibility mode refuses the candidate)
-- ARGV[15] {ns}:adm:protected (_commit.lua: protected_guard: a protected label has no rollout)
-- ARGV[16] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[17] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[18] this write's id (16 hex digits, random)
-- ARGV[19] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev, version, previous, forced} (as the audit entry: see AuditEvent), or
-- {'ERR', 'NOPROMPT' | 'NOLABEL' | 'NOVERSION' | 'NOROLLOUT'}, {'ERR', 'ROLLOUT', candidate} (one is
-- running), {'ERR', 'SAMEVERSION', stable}, a check_move refusal, or {'ERR', 'RETRY', stable,
-- candidate} when KEYS[4] or KEYS[5] are not the keys of those versions: call again with them.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ERR', 'NOPROMPT'}
end
local op = ARGV[1]
local protected = protected_guard(ARGV[2], ARGV[3])
if protected then
  return protected
end
if op == 'start_rollout' then
  local guarded = graph_guard(KEYS[6], ARGV[2], false)
  if guarded then
    return guarded
  end
end
local running = redis.call('HGET', KEYS[3], 'candidate')
if op ~= 'start_rollout' and not running then
  return {'ERR', 'NOROLLOUT'}
end
local stable = redis.call('GET', KEYS[2])
if not stable then
  return {'ERR', 'NOLABEL'}
end
stable = tonumber(stable)
local field = ARGV[2] .. ':' .. ARGV[3]
local fields = {'at', ARGV[8], 'action', op, 'prompt', ARGV[2], 'label', ARGV[3], 'author', ARGV[9],
  'reason', ARGV[10]}

if op == 'start_rollout' then
  if running then
    return {'ERR', 'ROLLOUT', tonumber(running)}
  end
  if redis.call('EXISTS', KEYS[4]) == 0 or ARGV[13] .. ARGV[4] ~= KEYS[4] then
    return {'ERR', 'NOVERSION'}
  end
  local candidate = tonumber(ARGV[4])
  if candidate == stable then
    return {'ERR', 'SAMEVERSION', stable}
  end
  if ARGV[13] .. stable ~= KEYS[5] then
    return {'ERR', 'RETRY', stable, candidate}
  end
  local forced = ''
  local mode = redis.call('HGET', KEYS[1], 'compatibility') or 'none'
  local refusal = check_move(mode, stable, candidate, KEYS[5], KEYS[4])
  if refusal then
    if ARGV[14] ~= '1' then
      return refusal
    end
    forced = '1'
  end
  redis.call('HSET', KEYS[3], 'candidate', candidate, 'points', ARGV[6], 'started_at', ARGV[8], 'author', ARGV[9])
  redis.call('HSET', KEYS[10], field, candidate .. ':' .. ARGV[6])
  fields[#fields + 1] = 'forced'
  fields[#fields + 1] = forced
  fields[#fields + 1] = 'percent'
  fields[#fields + 1] = ARGV[7]
  local rev = commit(KEYS[6], KEYS[7], KEYS[8], ARGV[12], ARGV[11], fields, candidate, stable,
    redis.call('HGET', KEYS[4], 'sha256') or false)
  return reply({'OK', rev, candidate, stable, forced})
end

local candidate = tonumber(running)
if ARGV[13] .. candidate ~= KEYS[4] or ARGV[13] .. stable ~= KEYS[5] then
  return {'ERR', 'RETRY', stable, candidate}
end
local version, previous, sha_key = candidate, stable, KEYS[4]
if op == 'set_rollout' then
  redis.call('HSET', KEYS[3], 'points', ARGV[6])
  redis.call('HSET', KEYS[10], field, candidate .. ':' .. ARGV[6])
  fields[#fields + 1] = 'percent'
  fields[#fields + 1] = ARGV[7]
elseif op == 'promote_rollout' then
  redis.call('DEL', KEYS[3])
  redis.call('HDEL', KEYS[10], field)
  redis.call('SET', KEYS[2], candidate)
  redis.call('HSET', KEYS[9], ARGV[2], candidate)
  redis.call('SET', KEYS[11], stable)
elseif op == 'abort_rollout' then
  redis.call('DEL', KEYS[3])
  redis.call('HDEL', KEYS[10], field)
  version, previous, sha_key = stable, candidate, KEYS[5]
else
  return {'ERR', 'CORRUPT'}
end
local rev = commit(KEYS[6], KEYS[7], KEYS[8], ARGV[12], ARGV[11], fields, version, previous,
  redis.call('HGET', sha_key, 'sha256') or false)
return reply({'OK', rev, version, previous, ''})
