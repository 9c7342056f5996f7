-- Shared tail of every write script (prepended to each script when it is loaded).
--
-- commit(k_rev, k_log, k_plog, channel, head, fields, version, prev) INCRs the global revision,
-- appends the audit entry to the prompt's stream and the registry-wide stream, and PUBLISHes the
-- change message last. `head` is the msgpack map head Python packed (its header already counts the
-- three pairs appended here: rev, version, prev). `fields` is a flat list of audit field/value
-- pairs; empty values are left out. `version` / `prev` are numbers or false.
-- The last ARGV of every write script is the publish command: 'PUBLISH', or 'SPUBLISH' on a
-- cluster (sharded pub/sub: the channel has the keys' hash tag, so it lives on their node).
-- Returns the new revision.

local unpack = unpack or table.unpack

-- msgpack encoding of a non-negative integer (exact below 2^53) or nil (false).
local function mp_uint(n)
  if not n then
    return '\192'
  end
  if n < 128 then
    return string.char(n)
  end
  if n < 65536 then
    return '\205' .. string.char(math.floor(n / 256), n % 256)
  end
  local bytes = {}
  for i = 8, 1, -1 do
    bytes[i] = n % 256
    n = math.floor(n / 256)
  end
  return '\207' .. string.char(unpack(bytes))
end

local function commit(k_rev, k_log, k_plog, channel, head, fields, version, prev)
  local rev = redis.call('INCR', k_rev)
  local entry = {'rev', rev}
  for i = 1, #fields, 2 do
    if fields[i + 1] ~= '' then
      entry[#entry + 1] = fields[i]
      entry[#entry + 1] = fields[i + 1]
    end
  end
  if version then
    entry[#entry + 1] = 'version'
    entry[#entry + 1] = version
  end
  if prev then
    entry[#entry + 1] = 'previous_version'
    entry[#entry + 1] = prev
  end
  redis.call('XADD', k_plog, '*', unpack(entry))
  redis.call('XADD', k_log, 'MAXLEN', '~', 100000, '*', unpack(entry))
  local publish = ARGV[#ARGV] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH'
  redis.call(publish, channel,
    head .. '\163rev' .. mp_uint(rev) .. '\167version' .. mp_uint(version) .. '\164prev' .. mp_uint(prev))
  return rev
end
