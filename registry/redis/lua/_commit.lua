-- Shared tail of every write script (prepended to each script when it is loaded).
--
-- commit(k_rev, k_log, k_plog, channel, head, fields, version, prev, sha) INCRs the global
-- revision, records this write's id as the registry's last write ({ns}:revid), appends the audit
-- entry to the prompt's stream and the registry-wide stream, and PUBLISHes the change message last.
-- `head` is the msgpack map head Python packed (its header already counts the six pairs appended
-- here: rev, version, prev, sha, hid, phid). `fields` is a flat list of audit field/value pairs;
-- empty values are left out. `version` / `prev` are numbers or false; `sha` is the sha256 (hex) of
-- `version`'s text, or false.
-- The last KEYS of every write script is {ns}:revid: the id of the write that made the current
-- revision (missing: '', a registry written before ids existed). The last two ARGV of every write
-- script are this write's id (random, from Python: fakeredis's Lua has no sha1hex, and an id that
-- is unique per write identifies the whole history up to it, since a write runs once, on one
-- state) and the publish command: 'PUBLISH', 'SPUBLISH' on a cluster (sharded pub/sub: the
-- channel has the keys' hash tag, so it lives on their node), or 'DEFER': do not publish, and
-- reply() appends the message to the script's reply (Python publishes it after WAIT confirmed).
-- Returns the new revision.
--
-- The last KEYS but one of every write script is {ns}:ix:graph, the composition graph: a hash with
-- 'u:<name>' = the partials any version of <name> includes and 'b:<name>' = the prompts with a
-- version including <name> (names space-separated). The ARGV before the write id are the revision
-- the caller checked the graph at ('' = none; with '!' appended: the check needed force) and the
-- partials a new version includes (add_version). graph_guard(k_rev, name, always) lets a write
-- through only when the caller checked the graph at the current revision, or when it need not
-- (`always` false and <name> is in no composition): else {'ERR', 'GRAPH'}, and Python reads the
-- graph, runs registry/composition.py's checks and calls again with the revision it read. Any
-- write in between moves the revision, so the checks always saw the state the write applies to.
-- graph_record(name) adds a new version's partials to the graph.
--
-- The ARGV before the graph guard's two is {ns}:adm:protected, the protected labels
-- (registry/redis/governance.py). protected_guard(name, label) answers {'ERR', 'PROTECTED'} for a
-- direct move of a protected label. The key is read without being declared in KEYS, the one
-- exception to that rule: FCALL counts every declared key as written, and the writer role may read
-- the key, never write it (docs/governance.md). It shares the hash tag, so the slot, of the keys
-- declared. The refusal is the writer's typed error; what enforces a protection is that a protected
-- label's truth ({ns}:gov:ix) is a key the writer cannot write.
--
-- check_move(mode, current, target, current_key, target_key) is the compatibility check of a label
-- move from version `current` (where the label last pointed; false: never set, never checked) to
-- `target`, whose hashes are the given keys (the caller has verified they are those versions' keys,
-- in KEYS). It compares the versions' `inputs` fields (variable and placeholder names,
-- space-separated), their `type` (absent: text) and, for chat versions, their `placeholders` (which
-- of the inputs take a list of messages). Returns false when the move passes, else
-- {'ERR', 'INCOMPATIBLE', mode, added, removed, current, current type, target type, kind changes}
-- (names space-separated; kind changes: inputs one version takes as a variable, the other as a
-- placeholder) or, for a version written before these fields existed (`promptreg migrate` fills
-- them), {'ERR', 'NOINPUTS', version}: never a silent pass.

local unpack = unpack or table.unpack

local function name_set(names)
  local set = {}
  for name in string.gmatch(names, '%S+') do
    set[name] = true
  end
  return set
end

-- A chat version's placeholder names as a set (a text version has none); false when not stored.
local function slots_of(key, kind)
  if kind ~= 'chat' then
    return {}
  end
  local names = redis.call('HGET', key, 'placeholders')
  return names and name_set(names)
end

local function check_move(mode, current, target, current_key, target_key)
  if mode == 'none' or not current or current == target then
    return false
  end
  local have = redis.call('HGET', current_key, 'inputs')
  if not have then
    return {'ERR', 'NOINPUTS', current}
  end
  local want = redis.call('HGET', target_key, 'inputs')
  if not want then
    return {'ERR', 'NOINPUTS', target}
  end
  local have_type = redis.call('HGET', current_key, 'type') or 'text'
  local want_type = redis.call('HGET', target_key, 'type') or 'text'
  local had_slots = slots_of(current_key, have_type)
  if not had_slots then
    return {'ERR', 'NOINPUTS', current}
  end
  local wanted_slots = slots_of(target_key, want_type)
  if not wanted_slots then
    return {'ERR', 'NOINPUTS', target}
  end
  local had, wanted = name_set(have), name_set(want)
  local added, removed, kinds = {}, {}, {}
  for name in string.gmatch(want, '%S+') do
    if not had[name] then
      added[#added + 1] = name
    elseif (had_slots[name] or false) ~= (wanted_slots[name] or false) then
      kinds[#kinds + 1] = name
    end
  end
  for name in string.gmatch(have, '%S+') do
    if not wanted[name] then
      removed[#removed + 1] = name
    end
  end
  if #added > 0 or #kinds > 0 or have_type ~= want_type or (mode == 'full' and #removed > 0) then
    return {'ERR', 'INCOMPATIBLE', mode, table.concat(added, ' '), table.concat(removed, ' '), current,
      have_type, want_type, table.concat(kinds, ' ')}
  end
  return false
end

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

-- msgpack encoding of a string shorter than 32 bytes, or nil (false).
local function mp_short(s)
  if not s then
    return '\192'
  end
  return string.char(160 + #s) .. s
end

local deferred = false
local graph_forced = false

local function graph_guard(k_rev, name, always)
  local k_graph = KEYS[#KEYS - 1]
  local checked = ARGV[#ARGV - 3]
  if checked == '' then
    if always or redis.call('HEXISTS', k_graph, 'u:' .. name) == 1
        or redis.call('HEXISTS', k_graph, 'b:' .. name) == 1 then
      return {'ERR', 'GRAPH'}
    end
    return false
  end
  local forced = string.sub(checked, -1) == '!'
  if forced then
    checked = string.sub(checked, 1, -2)
  end
  if (redis.call('GET', k_rev) or '0') ~= checked then
    return {'ERR', 'GRAPH'}
  end
  graph_forced = forced
  return false
end

local function protected_guard(name, label)
  if redis.call('HEXISTS', ARGV[#ARGV - 4], name .. ':' .. label) == 1 then
    return {'ERR', 'PROTECTED'}
  end
  return false
end

-- The refusals every direct move of a label checks first (delete_label, rollback_label): a missing
-- prompt, the composition graph's guard, a protected label, a running rollout. Returns the refusal
-- or false.
local function direct_move_guard(k_prompt, k_rev, k_rollout, name, label)
  if redis.call('EXISTS', k_prompt) == 0 then
    return {'ERR', 'NOPROMPT'}
  end
  local refused = graph_guard(k_rev, name, false) or protected_guard(name, label)
  if refused then
    return refused
  end
  local rollout = redis.call('HGET', k_rollout, 'candidate')
  if rollout then
    return {'ERR', 'ROLLOUT', tonumber(rollout)}
  end
  return false
end

local function graph_add(field, names)
  local k_graph = KEYS[#KEYS - 1]
  local have = redis.call('HGET', k_graph, field) or ''
  local known = name_set(have)
  local changed = false
  for name in string.gmatch(names, '%S+') do
    if not known[name] then
      known[name] = true
      have = have == '' and name or (have .. ' ' .. name)
      changed = true
    end
  end
  if changed then
    redis.call('HSET', k_graph, field, have)
  end
end

local function graph_record(name)
  local partials = ARGV[#ARGV - 2]
  if partials == '' then
    return
  end
  graph_add('u:' .. name, partials)
  for partial in string.gmatch(partials, '%S+') do
    graph_add('b:' .. partial, name)
  end
end

-- A script's OK reply, with the unpublished change message last when the publish is deferred.
local function reply(result)
  if deferred then
    result[#result + 1] = deferred
  end
  return result
end

local function commit(k_rev, k_log, k_plog, channel, head, fields, version, prev, sha)
  local k_revid = KEYS[#KEYS]
  local before = redis.call('GET', k_revid) or ''
  local hid = ARGV[#ARGV - 1]
  local rev = redis.call('INCR', k_rev)
  redis.call('SET', k_revid, hid)
  local entry = {'rev', rev, 'hid', hid}
  if graph_forced then
    fields[#fields + 1] = 'forced'
    fields[#fields + 1] = '1'
    for i = 1, #fields - 2, 2 do
      if fields[i] == 'forced' then
        fields[i + 1] = ''
      end
    end
  end
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
  local message = head .. '\163rev' .. mp_uint(rev) .. '\167version' .. mp_uint(version) .. '\164prev' ..
    mp_uint(prev) .. '\163sha' .. mp_short(sha and string.sub(sha, 1, 16)) .. '\163hid' .. mp_short(hid) ..
    '\164phid' .. mp_short(string.sub(before, 1, 31))
  local mode = ARGV[#ARGV]
  if mode == 'DEFER' then
    deferred = message
  else
    redis.call(mode == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', channel, message)
  end
  return rev
end
