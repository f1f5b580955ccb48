-- Puts jobs in one queue: due jobs into `queued` (highest priority first, FIFO within a
-- priority), later ones into `scheduled` (by due time). A job that is already present is
-- left alone, so dispatching the same job again from PostgreSQL is harmless.
-- KEYS[1]: queued zset     KEYS[2]: scheduled zset   KEYS[3]: jobs hash (id -> payload)
-- KEYS[4]: attempts hash   KEYS[5]: sequence counter KEYS[6]: signal list (wakes workers)
-- KEYS[7]: keyof hash (id -> flow key)
-- ARGV: groups of 6: id, priority (0-9), due (unix ms), attempts already made, flow key
--       ('' for none), payload
-- Returns: the number of jobs added.
local now = clock()
local added = 0
for i = 1, #ARGV, 6 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[3], id, ARGV[i + 5]) == 1 then
    -- A new job has made no attempt; fetch's HINCRBY counts from a missing field as 0.
    if ARGV[i + 3] ~= '0' then
      redis.call('HSET', KEYS[4], id, ARGV[i + 3])
    end
    if ARGV[i + 4] ~= '' then
      redis.call('HSET', KEYS[7], id, ARGV[i + 4])
    end
    place(KEYS[1], KEYS[2], KEYS[5], id, band_of(ARGV[i + 1]), tonumber(ARGV[i + 2]), now)
    added = added + 1
  end
end
if added > 0 then
  wake(KEYS[6], added)
end
return added
