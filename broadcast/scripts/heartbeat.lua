-- Keep an edge alive. KEYS: edges[, the edge's info hash].
-- ARGV: edge id, heartbeat ttl (s)[, then field, value, ... of the edge's info].
-- Returns 1 if the edge was not in the set: its first beat, or its
-- registrations were lost (swept, or Redis lost its data).
local t = now()
local added = redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[1])
if KEYS[2] then
  -- For operators (manage.py gqlws status): replaced whole at each beat,
  -- stamped with Redis's clock (the age of a beat is then skew-free), and
  -- expiring on its own if the edge dies where nobody sweeps it.
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'beat', string.format('%.6f', t), unpack(ARGV, 3))
  redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) * 1000))
end
return added
