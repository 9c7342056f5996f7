-- decide_request: record an approval that does not move the label yet, or a rejection (the
-- approver role's write: {ns}:gov:* is a key the writer may not write). The approval that moves the
-- label is set_label.lua with the request's keys.
--
-- KEYS[1] {ns}:rq:<id>                the request as requested
-- KEYS[2] {ns}:gov:rq:<id>            the request as decided: record (JSON), applied_rev
-- KEYS[3] {ns}:gov:rq                 decided request ids by creation time (ms)
-- KEYS[4] {ns}:rev                    global revision
-- KEYS[5] {ns}:log                    registry-wide audit stream
-- KEYS[6] {ns}:p:<name>:log           the prompt's audit stream
-- KEYS[7] {ns}:ix:graph               (_commit.lua)
-- KEYS[8] {ns}:revid                  (_commit.lua)
-- ARGV[1] name
-- ARGV[2] label
-- ARGV[3] request id
-- ARGV[4] its record as the caller read it (compare-and-set)
-- ARGV[5] the record to store (JSON)
-- ARGV[6] its creation time (ms)
-- ARGV[7] action: approve_request or reject_request
-- ARGV[8] at (ISO 8601, UTC)
-- ARGV[9] author
-- ARGV[10] reason ('' = none)
-- ARGV[11] message head (msgpack, packed by Python)
-- ARGV[12] channel
-- ARGV[13] version
-- ARGV[14] where the label pointed when requested ('' = unset)
-- ARGV[15] {ns}:adm:protected (_commit.lua)
-- ARGV[16] the revision the caller checked the composition graph at ('' = none)
-- ARGV[17] the partials a new version includes ('' = none)
-- ARGV[18] this write's id (16 hex digits, random)
-- ARGV[19] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- Returns {'OK', rev} or {'ERR', 'REQUEST'} (the record changed since the caller read it).

local seen = redis.call('HGET', KEYS[2], 'record') or redis.call('GET', KEYS[1])
if seen ~= ARGV[4] then
  return {'ERR', 'REQUEST'}
end
redis.call('HSET', KEYS[2], 'record', ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
local rev = commit(KEYS[4], KEYS[5], KEYS[6], ARGV[12], ARGV[11],
  {'at', ARGV[8], 'action', ARGV[7], 'prompt', ARGV[1], 'label', ARGV[2], 'author', ARGV[9],
   'reason', ARGV[10], 'request', ARGV[3]},
  tonumber(ARGV[13]), ARGV[14] ~= '' and tonumber(ARGV[14]) or false, false)
return reply({'OK', rev})
