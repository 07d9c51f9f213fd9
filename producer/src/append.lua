-- Appends a batch of events to their topics' histories, in one atomic step.
--
-- KEYS, 4 per event i (1-based offset 4*i): history stream, meta hash, group hash,
--   idempotency record (the history key again as a placeholder when there is none).
-- ARGV: max_len ("0" = none), max_age_ms ("0" = none), dedup_ms, n_events, then 4 per
--   event: data, name ("" = none), new_epoch (used if the history starts anew),
--   has_idem ("1"/"0").
-- Reply, one per event:
--   {0, id, epoch, prev, members}                    appended
--   {1, id, epoch, prev, members, data, name}        duplicate of an event in the dedup
--                                                    window; members empty when it can
--                                                    no longer be found in its history
-- members is the group hash as HGETALL returns it (instance, count, ...): reading it in
-- the same atomic step as the append is what closes the subscribe/publish race.

local max_len = ARGV[1]
local max_age = tonumber(ARGV[2])
local dedup_ms = ARGV[3]
local n = tonumber(ARGV[4])

-- A script is not rolled back when a command fails half-way, so every read comes before
-- the first write: an accepted batch is appended entirely, a failed one not at all. The
-- reads the appends need anyway check each key's type (a read of the wrong type fails);
-- only the history needs its own `TYPE`, which also says whether it exists. Each key is
-- read once per batch, and the tables below follow the batch's own writes, so several
-- events of one topic (or one idempotency key) in a batch see each other.
local expected = {'stream', 'hash', 'hash', 'string'}
local function wrong_type(key, role, found)
  return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. found .. ', expected a ' .. expected[role])
end
-- Runs a read of `key` (in role 1..4); returns its reply, or nil and the error to return.
local function checked(key, role, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply['err'] then
    local found = redis.call('TYPE', key)['ok']
    if found ~= expected[role] then
      return nil, wrong_type(key, role, found)
    end
    return nil, reply
  end
  return reply
end

local exists, metas, groups, records = {}, {}, {}, {}
for i = 0, n - 1 do
  local h, m, g, k = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  if exists[h] == nil then
    local found = redis.call('TYPE', h)['ok']
    if found ~= 'none' and found ~= 'stream' then
      return wrong_type(h, 1, found)
    end
    exists[h] = found == 'stream'
  end
  if metas[m] == nil then
    local meta, err = checked(m, 2, 'HMGET', m, 'epoch', 'last')
    if err then return err end
    metas[m] = {epoch = meta[1], last = meta[2]}
  end
  if groups[g] == nil then
    local members, err = checked(g, 3, 'HGETALL', g)
    if err then return err end
    groups[g] = members
  end
  if ARGV[8 + 4 * i] == '1' and records[k] == nil then
    local record, err = checked(k, 4, 'GET', k)
    if err then return err end
    records[k] = record
  end
end

-- Retention by age uses the server's clock, never a client's: clients disagree, and a
-- MINID ahead of the server's clock would trim the entry being added.
local min_id = nil
if max_age > 0 then
  local now = redis.call('TIME')
  local oldest_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age
  if oldest_ms > 0 then
    min_id = string.format('%.0f', oldest_ms)
  end
end

local results = {}
local to_trim = {}
for i = 0, n - 1 do
  local h, m, g, k = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local data, name, new_epoch = ARGV[5 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i]
  local has_idem = ARGV[8 + 4 * i] == '1'
  local meta = metas[m]

  local seen, sep = false, nil
  if has_idem then
    seen = records[k]
    -- A record not of our making (no '~') is treated as absent rather than failing the batch.
    sep = seen and string.find(seen, '~', 1, true)
  end
  if sep then
    local id = string.sub(seen, 1, sep - 1)
    local epoch = string.sub(seen, sep + 1)
    local prev, members, old_data, old_name = '0-0', {}, '', ''
    -- Re-route the original only while it is still what the history holds; a gateway
    -- drops what it already delivered, and this fills the gap of a producer that crashed
    -- between append and route.
    if meta.epoch == epoch then
      local found = redis.call('XRANGE', h, id, id)
      if #found == 1 then
        local fields = found[1][2]
        for j = 1, #fields, 2 do
          local field, value = fields[j], fields[j + 1]
          if field == 'p' then prev = value
          elseif field == 'd' then old_data = value
          elseif field == 'n' then old_name = value
          end
        end
        members = groups[g]
      end
    end
    results[#results + 1] = {1, id, epoch, prev, members, old_data, old_name}
  else
    local epoch, last = meta.epoch, meta.last
    local fresh = not exists[h] or not epoch or not last
    if fresh then
      -- A history created anew (first publish, deleted by retention, lost with Redis
      -- data): a new epoch tells cursors into the old one that events may be missing.
      epoch = new_epoch
      last = '0-0'
      if exists[h] then
        local newest = redis.call('XREVRANGE', h, '+', '-', 'COUNT', 1)
        if #newest == 1 then
          last = newest[1][1]
        end
      end
    end
    local xadd = {'XADD', h}
    if max_len ~= '0' then
      xadd[#xadd + 1] = 'MAXLEN'
      xadd[#xadd + 1] = '~'
      xadd[#xadd + 1] = max_len
    end
    xadd[#xadd + 1] = '*'
    xadd[#xadd + 1] = 'p'
    xadd[#xadd + 1] = last
    if name ~= '' then
      xadd[#xadd + 1] = 'n'
      xadd[#xadd + 1] = name
    end
    xadd[#xadd + 1] = 'd'
    xadd[#xadd + 1] = data
    local id = redis.call(unpack(xadd))
    exists[h] = true
    if fresh then
      redis.call('HSET', m, 'epoch', epoch, 'last', id)
    else
      redis.call('HSET', m, 'last', id)
    end
    meta.epoch, meta.last = epoch, id
    if has_idem then
      local record = id .. '~' .. epoch
      redis.call('SET', k, record, 'PX', dedup_ms)
      records[k] = record
    end
    if min_id then
      to_trim[h] = true
    end
    results[#results + 1] = {0, id, epoch, last, groups[g]}
  end
end

-- Once per history, after its appends: trimming is approximate (whole macro nodes), so
-- appends stay O(1) and the oldest entries may outlive max_age a little.
for h, _ in pairs(to_trim) do
  redis.call('XTRIM', h, 'MINID', '~', min_id)
end

return results
