-- Ends attempts: each job either leaves Redis (succeeded or dead) or goes back for a
-- retry at a given time. An attempt whose token no longer holds the lease is refused,
-- so a late result never overrides a newer attempt or a cancellation. An ended attempt
-- frees its flow key's slot; a 429 or 503 with Retry-After makes its whole key wait.
-- KEYS[1]: running zset   KEYS[2]: scheduled zset   KEYS[3]: queued zset
-- KEYS[4]: jobs hash      KEYS[5]: attempts hash    KEYS[6]: leases hash
-- KEYS[7]: sequence counter   KEYS[8]: signal list
-- KEYS[9]: journal hash ("id:token" -> the attempt's record)   KEYS[10]: journal zset (by time)
-- KEYS[11..16]: flow control (see `flow_keys` in prelude.lua)
-- ARGV: groups of 6: id, token, retry time in unix ms or '-' when done, priority (0-9),
--       until when the job's flow key waits in unix ms or '' (no Retry-After),
--       the attempt's record (JSON), kept in the journal until PostgreSQL has it, so a
--       worker that dies before its history batch lands loses nothing
-- Returns: one entry per job: 1 applied, 0 refused (the lease was lost)
local now = clock()
local f = flow_keys(11)
local out, woken = {}, 0
for i = 1, #ARGV, 6 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[6], id) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZREM', KEYS[1], id)
    local entry = id .. ':' .. ARGV[i + 1]
    redis.call('HSET', KEYS[9], entry, ARGV[i + 5])
    redis.call('ZADD', KEYS[10], now, entry)
    if ARGV[i + 4] ~= '' then
      pause_key(f, id, tonumber(ARGV[i + 4]))
    end
    woken = woken + left_running(f, KEYS[3], id)
    if ARGV[i + 2] == '-' then
      redis.call('HDEL', KEYS[4], id)
      redis.call('HDEL', KEYS[5], id)
      forget_key(f, id)
    else
      place(KEYS[3], KEYS[2], KEYS[7], id, band_of(ARGV[i + 3]), tonumber(ARGV[i + 2]), now)
      woken = woken + 1
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if woken > 0 then
  wake(KEYS[8], woken)
end
return out
