-- Remove an edge: its registrations in every group, its hash, its stream,
-- its info hash, its entry in the edges set. With force = '0' (a sweep)
-- only if its heartbeat expired: a sweeper racing the edge's own heartbeat,
-- or another sweeper, finds it fresh or gone and does nothing.
-- KEYS: edges, the edge's subscriptions hash, the edge's stream, the edge's info
-- ARGV: edge id, history ttl (ms), force ('1' or '0'). Returns 1 if removed.
if ARGV[3] == '0' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not score or tonumber(score) >= now() then
    return 0
  end
end
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  forget(fields[i + 1], ARGV[1] .. ' ' .. fields[i], ARGV[2])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
