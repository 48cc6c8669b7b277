-- Remove one subscription. KEYS: the edge's subscriptions hash.
-- ARGV: edge id, sub id, history ttl (ms). Returns 1 if it was registered.
local record = redis.call('HGET', KEYS[1], ARGV[2])
if not record then
  return 0
end
forget(record, ARGV[1] .. ' ' .. ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[2])
return 1
