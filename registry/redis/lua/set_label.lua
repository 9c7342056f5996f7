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
-- ARGV[12] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[13] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[14] this write's id (16 hex digits, random)
-- ARGV[15] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- The compatibility check compares the target with where the label last pointed: where it points,
-- or where it pointed when it was deleted (delete + set is one move); a label never set is not
-- checked.
-- Returns {'OK', rev, previous or false, forced} or {'ERR', 'NOPROMPT' | 'NOVERSION' | 'CONFLICT',
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
local rollout = redis.call('HGET', KEYS[12], 'candidate')
if rollout then
  return {'ERR', 'ROLLOUT', tonumber(rollout)}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'ERR', 'NOVERSION'}
end
local version = tonumber(ARGV[3])
local current = redis.call('GET', KEYS[3])
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
   'reason', ARGV[7], 'forced', forced},
  version, current or false, redis.call('HGET', KEYS[2], 'sha256') or false)
return reply({'OK', rev, current or false, forced})
