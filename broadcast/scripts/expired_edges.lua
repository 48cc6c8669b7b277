-- Edges whose heartbeat expired, by Redis's clock. KEYS: edges. ARGV: how many at most.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.6f', now()),
  'LIMIT', 0, ARGV[1])
