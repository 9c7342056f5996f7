-- add_version: append a new immutable version to a prompt.
--
-- KEYS[1] {ns}:p:<name>         the prompt's hash (field 'latest' = newest version number)
-- KEYS[2] {ns}:rev              global revision
-- KEYS[3] {ns}:log              registry-wide audit stream
-- KEYS[4] {ns}:p:<name>:log     the prompt's audit stream
-- KEYS[5] {ns}:ix:latest         index: name -> latest version
-- KEYS[6] {ns}:p:<name>:v:<n>   the new version's hash, as the caller expects it (latest + 1)
-- KEYS[7] {ns}:p:<name>:vp:<n>  the new version's packed record (registry/redis/packed.py)
-- KEYS[8] {ns}:ix:graph             the composition graph (_commit.lua: graph_guard)
-- KEYS[9] {ns}:revid                  the id of the registry's last write (_commit.lua)
-- ARGV[1] name
-- ARGV[2] version key prefix    {ns}:p:<name>:v:  (the new number is appended; same slot)
-- ARGV[3] prompt_text
-- ARGV[4] author ('' = none)
-- ARGV[5] created_at (ISO 8601, UTC)
-- ARGV[6] message ('' = none)
-- ARGV[7] metadata (msgpack)
-- ARGV[8] sha256 of the text
-- ARGV[9] message head (msgpack, packed by Python)
-- ARGV[10] channel
-- ARGV[11] inputs: the version's variable and placeholder names, sorted, space-separated
-- ARGV[12] messages of a chat version (msgpack; '' = a text version)
-- ARGV[13] config (msgpack; '' = none)
-- ARGV[14] placeholders of a chat version: its placeholder names, sorted, space-separated
-- ARGV[15] the packed record: the same version in one msgpack value (registry/redis/packed.py)
-- ARGV[16] packed record key prefix  {ns}:p:<name>:vp:  (the new number is appended; same slot)
-- ARGV[17] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[18] the revision the caller checked the composition graph at ('' = none; '!' appended: forced)
-- ARGV[19] the partials the new version includes, space-separated (add_version; '' = none)
-- ARGV[20] this write's id (16 hex digits, random)
-- ARGV[21] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev, version} or {'ERR', 'NOPROMPT'} / {'ERR', 'CORRUPT'}, or {'ERR', 'RETRY', n}
-- when KEYS[6] (or KEYS[7]) is not version n's key (another write came first): call again with that key.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ERR', 'NOPROMPT'}
end
if ARGV[#ARGV - 2] ~= '' then
  local guarded = graph_guard(KEYS[2], ARGV[1], true)
  if guarded then
    return guarded
  end
end
local version = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0') + 1
local key = ARGV[2] .. version
-- Every key touched must be declared (Cluster slot migration), so the caller names this one.
if key ~= KEYS[6] or ARGV[16] .. version ~= KEYS[7] then
  return {'ERR', 'RETRY', version}
end
-- A version hash is written once and never again: if it exists, the index is damaged.
if redis.call('EXISTS', key, KEYS[7]) > 0 then
  return {'ERR', 'CORRUPT'}
end
redis.call('HSET', KEYS[1], 'latest', version)
redis.call('HSET', KEYS[5], ARGV[1], version)
graph_record(ARGV[1])
redis.call('HSET', key, 'prompt_text', ARGV[3], 'created_at', ARGV[5], 'metadata', ARGV[7], 'sha256', ARGV[8],
  'inputs', ARGV[11])
redis.call('SET', KEYS[7], ARGV[15])
if ARGV[12] ~= '' then
  redis.call('HSET', key, 'type', 'chat', 'messages', ARGV[12], 'placeholders', ARGV[14])
end
if ARGV[13] ~= '' then
  redis.call('HSET', key, 'config', ARGV[13])
end
if ARGV[4] ~= '' then
  redis.call('HSET', key, 'author', ARGV[4])
end
if ARGV[6] ~= '' then
  redis.call('HSET', key, 'message', ARGV[6])
end
local rev = commit(KEYS[2], KEYS[3], KEYS[4], ARGV[10], ARGV[9],
  {'at', ARGV[5], 'action', 'add_version', 'prompt', ARGV[1], 'author', ARGV[4], 'reason', ARGV[6]},
  version, false, ARGV[8])
return reply({'OK', rev, version})
