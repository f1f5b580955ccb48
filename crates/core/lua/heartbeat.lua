-- Extends the leases a worker still holds.
-- KEYS[1]: running zset   KEYS[2]: leases hash
-- ARGV[1]: lease length in ms, then pairs: id, token
-- Returns: the ids whose lease this worker no longer holds (reaped, cancelled or wiped)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = string.format('%.0f', now + tonumber(ARGV[1]))
local lost = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
