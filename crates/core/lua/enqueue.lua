-- Puts jobs in one queue: due jobs into `queued` (highest priority first, FIFO within a
-- priority), later ones into `scheduled` (by due time). A job that is already present is
-- left alone, so dispatching the same job again from PostgreSQL is harmless.
-- KEYS[1]: queued zset     KEYS[2]: scheduled zset   KEYS[3]: jobs hash (id -> payload)
-- KEYS[4]: attempts hash   KEYS[5]: sequence counter KEYS[6]: signal list (wakes workers)
-- ARGV: groups of 5: id, priority (0-9), due (unix ms), attempts already made, payload
-- Returns: the number of jobs added.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- 2^44 leaves room for the FIFO sequence inside each priority band while the score
-- stays an exact integer in a double.
local BAND = 17592186044416
local added = 0
for i = 1, #ARGV, 5 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[3], id, ARGV[i + 4]) == 1 then
    local band = 9 - tonumber(ARGV[i + 1])
    local due = tonumber(ARGV[i + 2])
    -- A new job has made no attempt; fetch's HINCRBY counts from a missing field as 0.
    if ARGV[i + 3] ~= '0' then
      redis.call('HSET', KEYS[4], id, ARGV[i + 3])
    end
    if due <= now then
      local seq = redis.call('INCR', KEYS[5])
      redis.call('ZADD', KEYS[1], string.format('%.0f', band * BAND + seq), id)
    else
      -- The last decimal digit carries the priority band back out at promotion.
      redis.call('ZADD', KEYS[2], string.format('%.0f', due * 10 + band), id)
    end
    added = added + 1
  end
end
-- Wake sleeping workers, one token each, without letting the list grow unbounded.
if added > 0 then
  local want = math.min(added, 32) - redis.call('LLEN', KEYS[6])
  for _ = 1, want do
    redis.call('RPUSH', KEYS[6], '1')
  end
end
return added
