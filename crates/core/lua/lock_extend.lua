-- Extends a lock (`SET key token NX PX`) if the caller still holds it.
-- KEYS[1]: the lock   ARGV[1]: the holder's token   ARGV[2]: new time to live in ms
-- Returns: 1 extended, 0 the lock is gone or someone else's
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
