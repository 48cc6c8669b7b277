-- Keep an edge alive. KEYS: edges. ARGV: edge id, heartbeat ttl (s).
-- Returns 1 if the edge was not in the set: its first beat, or its
-- registrations were lost (swept, or Redis lost its data).
return redis.call('ZADD', KEYS[1], now() + tonumber(ARGV[2]), ARGV[1])
