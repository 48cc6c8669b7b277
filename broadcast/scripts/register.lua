-- Register one subscription in its groups, at the offsets current now.
-- KEYS: edges, the edge's subscriptions hash, then per group: meta, events, subs
-- ARGV: edge id, sub id, record header, record data, heartbeat ttl (s),
--       history ttl (ms), then one fresh epoch per group
-- Returns {edge newly added to edges (0/1), epoch1, offset1, epoch2, offset2, ...}.
local edges, hash = KEYS[1], KEYS[2]
local edge, sub = ARGV[1], ARGV[2]
local member = edge .. ' ' .. sub

-- Registering an id again replaces the registration, groups included.
local old = redis.call('HGET', hash, sub)
if old then
  forget(old, member, ARGV[6])
end

local positions, reply = {}, {0}
local n = 0
for i = 3, #KEYS, 3 do
  n = n + 1
  local meta, events, subs = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local epoch, last = ensure_epoch(meta, events, subs, ARGV[6 + n])
  redis.call('PERSIST', meta)
  -- Score = the last offset issued: this subscription gets every later one.
  redis.call('ZADD', subs, int(last), member)
  positions[n] = {epoch, last}
  reply[2 * n] = epoch
  reply[2 * n + 1] = last
end
redis.call('HSET', hash, sub, ARGV[3] .. cmsgpack.pack(positions) .. ARGV[4])
-- An edge holding registrations is always in the edges set, hence sweepable.
reply[1] = redis.call('ZADD', edges, 'NX', now() + tonumber(ARGV[5]), edge)
return reply
