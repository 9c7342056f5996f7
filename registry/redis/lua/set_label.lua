-- set_label: point a label at an existing version, with optional compare-and-set.
--
-- KEYS[1] {ns}:p:<name>               the prompt's hash
-- KEYS[2] {ns}:p:<name>:v:<version>   the target version
-- KEYS[3] {ns}:p:<name>:label:<label> the label
-- KEYS[4] {ns}:p:<name>:labels        set of the prompt's labels
-- KEYS[5] {ns}:p:<name>:prev:<label>  where the label pointed before its last move (for a deleted
--                                      label: where it pointed when deleted, the check's baseline)
-- KEYS[6] {ns}:rev                    global revision
-- KEYS[7] {ns}:log                    registry-wide audit stream
-- KEYS[8] {ns}:p:<name>:log           the prompt's audit stream
-- KEYS[9] {ns}:ix:label:<label>        index: name -> version for this label
-- KEYS[10] {ns}:ix:labels              index: label names with entries
-- KEYS[11] {ns}:p:<name>:v:<last>     the version the label last pointed at (KEYS[3], else KEYS[5]
--                                      for a deleted label), as the caller guessed it (any key of
--                                      the prefix when it guessed none)
-- KEYS[12] {ns}:p:<name>:rollout:<label>  the label's rollout: a plain move is refused while it runs
-- KEYS[13] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[14] {ns}:revid                  the id of the registry's last write (_commit.lua)
-- ARGV[1] name
-- ARGV[2] label
-- ARGV[3] version
-- ARGV[4] expected version ('' = no check, '0' = label must not exist)
-- ARGV[5] at (ISO 8601, UTC)
-- ARGV[6] author ('' = none)
-- ARGV[7] reason ('' = none)
-- ARGV[8] message head (msgpack, packed by Python)
-- ARGV[9] channel
-- ARGV[10] version key prefix         {ns}:p:<name>:v:  (same slot)
-- ARGV[11] force ('1' = move even if the compatibility mode refuses it; recorded as forced)
-- ARGV[12] the approved move request this move applies ('' = a direct move)
-- ARGV[13] a request: its record as the caller read it (compare-and-set: a decision meanwhile refuses)
-- ARGV[14] a request: its record to store, decided (JSON); ARGV[15] its creation time (ms)
-- ARGV[16] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[17] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[18] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[19] this write's id (16 hex digits, random)
-- ARGV[20] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- A request's move only (the approver role) declares four more keys, before the last two:
--   13: {ns}:gov:ix, 14: {ns}:rq:<id>, 15: {ns}:gov:rq:<id>, 16: {ns}:gov:rq
--   (the script reads them as KEYS[13] to KEYS[16]; graph and revid follow, _commit.lua). Whether
--   the label is protected is read in {ns}:adm:protected, which only admin may write (so not declared).
-- A protected label points where {ns}:gov:ix says: a direct move is refused (PROTECTED), a
-- request's move reads its current version there and writes it there and in the keys above.
-- The compatibility check compares the target with where the label last pointed: where it points,
-- or where it pointed when it was deleted (delete + set is one move); a label never set is not
-- checked.
-- Returns {'OK', rev, previous or false, forced} or {'ERR', 'NOPROMPT' | 'NOVERSION' | 'CONFLICT' |
-- 'PROTECTED' | 'REQUEST',
-- actual}, a check_move refusal (_commit.lua), or {'ERR', 'RETRY', last} when the compatibility
-- check needs the hash of the version the label last pointed at and KEYS[11] is not its key: call
-- again with that key.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ERR', 'NOPROMPT'}
end
local guarded = graph_guard(KEYS[6], ARGV[1], false)
if guarded then
  return guarded
end
local field = ARGV[1] .. ':' .. ARGV[2]
local request = ARGV[12]
local governed = false
if request == '' then
  local protected = protected_guard(ARGV[1], ARGV[2])
  if protected then
    return protected
  end
else
  local seen = redis.call('HGET', KEYS[15], 'record') or redis.call('GET', KEYS[14])
  if seen ~= ARGV[13] then
    return {'ERR', 'REQUEST'}
  end
  governed = protected_guard(ARGV[1], ARGV[2]) ~= false
end
local rollout = redis.call('HGET', KEYS[12], 'candidate')
if rollout then
  return {'ERR', 'ROLLOUT', tonumber(rollout)}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'ERR', 'NOVERSION'}
end
local version = tonumber(ARGV[3])
local current
if governed then
  current = redis.call('HGET', KEYS[13], field)
else
  current = redis.call('GET', KEYS[3])
end
if current then
  current = tonumber(current)
end
if ARGV[4] ~= '' then
  local expected = tonumber(ARGV[4])
  if (expected == 0 and current) or (expected ~= 0 and current ~= expected) then
    return {'ERR', 'CONFLICT', current or false}
  end
end
local mode = redis.call('HGET', KEYS[1], 'compatibility') or 'none'
local forced = ''
local last = current
if not last and mode ~= 'none' then
  -- Deleted: the rollback target holds where it pointed (set and rollback of an unset label clear it).
  last = redis.call('GET', KEYS[5])
  if last then
    last = tonumber(last)
  end
end
if mode ~= 'none' and last and last ~= version then
  if ARGV[10] .. last ~= KEYS[11] then
    return {'ERR', 'RETRY', last}
  end
  local refusal = check_move(mode, last, version, KEYS[11], KEYS[2])
  if refusal then
    if ARGV[11] ~= '1' then
      return refusal
    end
    forced = '1'
  end
end
if governed then
  redis.call('HSET', KEYS[13], field, version)
end
redis.call('SET', KEYS[3], version)
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[9], ARGV[1], version)
redis.call('SADD', KEYS[10], ARGV[2])
-- Re-pointing at the same version keeps the rollback target meaningful.
if current ~= version then
  if current then
    redis.call('SET', KEYS[5], current)
  else
    redis.call('DEL', KEYS[5])
  end
end
local rev = commit(KEYS[6], KEYS[7], KEYS[8], ARGV[9], ARGV[8],
  {'at', ARGV[5], 'action', 'set_label', 'prompt', ARGV[1], 'label', ARGV[2], 'author', ARGV[6],
   'reason', ARGV[7], 'forced', forced, 'request', request},
  version, current or false, redis.call('HGET', KEYS[2], 'sha256') or false)
if request ~= '' then
  redis.call('HSET', KEYS[15], 'record', ARGV[14], 'applied_rev', rev)
  redis.call('ZADD', KEYS[16], ARGV[15], request)
end
return reply({'OK', rev, current or false, forced})
