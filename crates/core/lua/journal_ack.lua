-- Drops journal entries whose records PostgreSQL now holds.
-- KEYS[1]: journal hash   KEYS[2]: journal zset
-- ARGV: entries ("id:token")
-- Returns: how many entries were dropped
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return n
