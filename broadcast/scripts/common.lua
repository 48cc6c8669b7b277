-- Helpers shared by every script of broadcast.redis (prepended to each one).
--
-- A group's keys share the base "<prefix>:{g:<group>}:" and are named by
-- appending "meta", "events", "subs" or "idem:<key>". A subscription's
-- record (a field of its edge's hash) is three msgpack objects one after
-- the other: [groups, key bases] (packed by Python), the positions (packed
-- here) and the subscription's data (packed by Python). Scripts only ever
-- decode the first one, with cmsgpack.unpack_one.

-- Redis's clock, not the caller's: heartbeats and sweeps from many hosts
-- compare times taken from the same clock, so host clock skew cannot get a
-- live edge swept.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Integers as Redis wants them: Lua would print 1e+15 for a large number.
local function int(n)
  return string.format('%d', n)
end

-- The group's epoch and last offset, creating a new epoch if the group has
-- none (first use, expiry, or a Redis that lost its data). A new epoch
-- starts an empty history; members left in the subscribers set from a lost
-- epoch get score 0 so they receive the new epoch's events, which their
-- edges see as an epoch change (a clean resync), not as silence.
local function ensure_epoch(meta, events, subs, fresh)
  local found = redis.call('HMGET', meta, 'epoch', 'last')
  if found[1] then
    return found[1], tonumber(found[2])
  end
  redis.call('DEL', events)
  if redis.call('EXISTS', subs) == 1 then
    redis.call('ZUNIONSTORE', subs, 1, subs, 'WEIGHTS', 0)
  end
  redis.call('HSET', meta, 'epoch', fresh, 'last', 0)
  return fresh, 0
end

-- Remove one subscription (its record and subscribers-set member) from the
-- groups it is in. A group left without subscribers gets an expiry on its
-- meta: while it has subscribers its epoch must never expire under them.
local function forget(record, member, ttl_ms)
  local _, header = cmsgpack.unpack_one(record)
  for _, base in ipairs(header[2]) do
    local subs = base .. 'subs'
    redis.call('ZREM', subs, member)
    if redis.call('EXISTS', subs) == 0 then
      redis.call('PEXPIRE', base .. 'meta', ttl_ms)
    end
  end
end

