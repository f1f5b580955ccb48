-- Extends the leases a worker still holds.
-- KEYS[1]: running zset   KEYS[2]: leases hash
-- ARGV[1]: lease length in ms, then pairs: id, token
-- Returns: pairs id, token of the attempts whose lease is gone (reaped, cancelled, wiped,
-- or taken over by a newer attempt of the same job)
local now = clock()
local deadline = string.format('%.0f', now + tonumber(ARGV[1]))
local lost = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return lost
