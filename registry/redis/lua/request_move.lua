-- request_move: record a request to move a protected label (the writer role's write).
--
-- KEYS[1] {ns}:p:<name>               the prompt's hash
-- KEYS[2] {ns}:p:<name>:v:<version>   the version asked for
-- KEYS[3] {ns}:rq:<id>                the request (JSON)
-- KEYS[4] {ns}:rq                     request ids by creation time (ms)
-- KEYS[5] {ns}:rev                    global revision
-- KEYS[6] {ns}:log                    registry-wide audit stream
-- KEYS[7] {ns}:p:<name>:log           the prompt's audit stream
-- KEYS[8] {ns}:ix:graph               (_commit.lua)
-- KEYS[9] {ns}:revid                  (_commit.lua)
-- ARGV[1] name
-- ARGV[2] label
-- ARGV[3] version
-- ARGV[4] request id
-- ARGV[5] the request (JSON)
-- ARGV[6] its creation time (ms)
-- ARGV[7] at (ISO 8601, UTC)
-- ARGV[8] author
-- ARGV[9] reason
-- ARGV[10] message head (msgpack, packed by Python)
-- ARGV[11] channel
-- ARGV[12] where the label points, as the caller read it ('' = unset)
-- ARGV[13] the approvals the protection needs, as the caller read it ('' = not protected)
-- ARGV[14] {ns}:gov:ix (where protected labels point; read only, like {ns}:adm:protected)
-- ARGV[15] {ns}:adm:protected (_commit.lua: protected_guard)
-- ARGV[16] the revision the caller checked the composition graph at ('' = none)
-- ARGV[17] the partials a new version includes ('' = none)
-- ARGV[18] this write's id (16 hex digits, random)
-- ARGV[19] 'PUBLISH', 'SPUBLISH' or 'DEFER' (_commit.lua)
-- The protection and where the label points are read from keys the writer may not declare (FCALL
-- counts declared keys as written): the caller read them, and they are compared here so the
-- request records them as they are. What they say only informs: the approval checks the protection
-- and the label's position again in its own write.
-- Returns {'OK', rev} or {'ERR', 'NOPROMPT' | 'NOVERSION' | 'NOTPROTECTED' | 'EXISTS' | 'RETRY'}.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ERR', 'NOPROMPT'}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'ERR', 'NOVERSION'}
end
local protected = ARGV[#ARGV - 4]
local field = ARGV[1] .. ':' .. ARGV[2]
local required = redis.call('HGET', protected, field)
if not required then
  return {'ERR', 'NOTPROTECTED'}
end
local current = redis.call('HGET', ARGV[14], field) or ''
if required ~= ARGV[13] or current ~= ARGV[12] then
  return {'ERR', 'RETRY'}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'ERR', 'EXISTS'}
end
redis.call('SET', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
local rev = commit(KEYS[5], KEYS[6], KEYS[7], ARGV[11], ARGV[10],
  {'at', ARGV[7], 'action', 'request_move', 'prompt', ARGV[1], 'label', ARGV[2], 'author', ARGV[8],
   'reason', ARGV[9], 'request', ARGV[4]},
  tonumber(ARGV[3]), current ~= '' and tonumber(current) or false, redis.call('HGET', KEYS[2], 'sha256') or false)
return reply({'OK', rev})
