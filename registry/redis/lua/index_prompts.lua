-- index_prompts: rebuild the index entries of a batch of prompts from their own keys (migrate).
--
-- KEYS[1] {ns}:ix:latest              index: name -> latest version
-- KEYS[2] {ns}:ix:labels              index: label names with entries
-- then per prompt, in ARGV's order:   {ns}:p:<name>, {ns}:p:<name>:labels, and one
--                                     {ns}:p:<name>:label:<label> per label the caller listed for it
-- then the m index hashes             {ns}:ix:label:<label>, in the order of ARGV[3..2+m]
-- ARGV[1] n, the number of prompts
-- ARGV[2] m, the number of index labels (every label of the batch and every label already indexed)
-- ARGV[3..2+m] the index label names
-- then per prompt: name, k (its number of labels), its k label names
-- Returns the names of the prompts whose label set is no longer what the caller listed (left as
-- they were: the caller reads them again). Every other prompt's entries equal its own keys.

local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local first_index = #KEYS - m
local retry = {}
local a = 3 + m
local k = 3
for _ = 1, n do
  local name = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local mine = {}
  for j = 1, count do
    mine[ARGV[a + 1 + j]] = KEYS[k + 1 + j]
  end
  local actual = redis.call('SMEMBERS', KEYS[k + 1])
  local same = #actual == count
  for _, label in ipairs(actual) do
    if not mine[label] then
      same = false
    end
  end
  if same then
    local latest = tonumber(redis.call('HGET', KEYS[k], 'latest') or '0')
    if latest > 0 then
      redis.call('HSET', KEYS[1], name, latest)
    else
      redis.call('HDEL', KEYS[1], name)
    end
    for j = 1, m do
      local key = mine[ARGV[2 + j]]
      local value = key and redis.call('GET', key)
      if value then
        redis.call('HSET', KEYS[first_index + j], name, value)
      else
        redis.call('HDEL', KEYS[first_index + j], name)
      end
    end
  else
    retry[#retry + 1] = name
  end
  a = a + 2 + count
  k = k + 2 + count
end
for j = 1, m do
  if redis.call('HLEN', KEYS[first_index + j]) > 0 then
    redis.call('SADD', KEYS[2], ARGV[2 + j])
  else
    redis.call('SREM', KEYS[2], ARGV[2 + j])
  end
end
return retry
