-- Hands leased jobs back without using up their attempt (a worker shutting down); their
-- flow keys' slots are free again.
-- KEYS[1]: running zset   KEYS[2]: queued zset   KEYS[3]: attempts hash
-- KEYS[4]: leases hash    KEYS[5]: sequence counter   KEYS[6]: signal list
-- KEYS[7..12]: flow control (see `flow_keys` in prelude.lua)
-- ARGV: groups of 3: id, token, priority (0-9)
-- Returns: one entry per job: 1 handed back, 0 the lease was already lost
local f = flow_keys(7)
local out = {}
local woken = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[4], id) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[4], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HINCRBY', KEYS[3], id, -1)
    woken = woken + 1 + left_running(f, KEYS[2], id)
    push_queued(KEYS[2], KEYS[5], id, band_of(ARGV[i + 2]))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if woken > 0 then
  wake(KEYS[6], woken)
end
return out
