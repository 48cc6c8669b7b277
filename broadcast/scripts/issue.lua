-- Append one event to a group: its offset is fixed here, once.
-- KEYS: meta, events, subs[, idem]
-- ARGV: kind, payload, fresh epoch, history length, history ttl (ms), idempotency ttl (ms),
--       issue time (wall clock, seconds: kept for the edges' latency metric)
-- Returns {epoch, offset} for a new event, {epoch, offset[, kind, payload]}
-- for the event an idempotency key already names.
local meta, events, subs, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

if idem then
  local found = redis.call('GET', idem)
  if found then
    local space = string.find(found, ' ', 1, true)
    local epoch, offset = string.sub(found, 1, space - 1), string.sub(found, space + 1)
    if redis.call('HGET', meta, 'epoch') == epoch then
      local entry = redis.call('XRANGE', events, offset .. '-1', offset .. '-1')[1]
      if entry then
        return {epoch, tonumber(offset), entry[2][2], entry[2][4]}
      end
    end
    return {epoch, tonumber(offset)}
  end
end

local epoch = ensure_epoch(meta, events, subs, ARGV[3])
local offset = redis.call('HINCRBY', meta, 'last', 1)
-- The offset is the entry id, so reading history by offset is an XRANGE.
redis.call('XADD', events, 'MAXLEN', '~', ARGV[4], int(offset) .. '-1', 'k', ARGV[1], 'p', ARGV[2], 't', ARGV[7])
redis.call('PEXPIRE', events, ARGV[5])
if redis.call('EXISTS', subs) == 0 then
  redis.call('PEXPIRE', meta, ARGV[5])
end
if idem then
  redis.call('SET', idem, epoch .. ' ' .. int(offset), 'PX', ARGV[6])
end
return {epoch, offset}
