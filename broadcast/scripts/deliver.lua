-- Append one batch to an edge's stream, only if the edge is registered: a
-- swept edge's stream must not be recreated by late fan-outs forever.
-- KEYS: edges, the edge's stream. ARGV: edge id, stream max length, type, body.
-- Returns 1 if appended.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 't', ARGV[3], 'b', ARGV[4])
return 1
