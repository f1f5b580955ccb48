-- Takes back jobs whose lease ran out (their worker died or stalled). The lost attempt
-- counts: a job with attempts left is queued again at once, one without ends dead.
-- Either way its flow key's slot is free again.
-- KEYS[1]: running zset   KEYS[2]: queued zset   KEYS[3]: jobs hash
-- KEYS[4]: attempts hash  KEYS[5]: leases hash   KEYS[6]: sequence counter
-- KEYS[7]: signal list    KEYS[8..13]: flow control (see `flow_keys` in prelude.lua)
-- ARGV[1]: most jobs to reap
-- Returns: strings, groups of 4: id, token of the lost attempt, attempts made, 'queued' or 'dead'
local now = clock()
local f = flow_keys(8)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),
  'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
local woken = 0
for _, id in ipairs(expired) do
  local token = redis.call('HGET', KEYS[5], id) or '0'
  redis.call('HDEL', KEYS[5], id)
  redis.call('ZREM', KEYS[1], id)
  woken = woken + left_running(f, KEYS[2], id)
  local payload = redis.call('HGET', KEYS[3], id)
  if payload then
    local spec = cjson.decode(payload)
    -- A spec leaves out fields equal to their defaults (JobSpec in domain/spec.rs).
    local max_attempts = spec.max_attempts or DEFAULT_MAX_ATTEMPTS
    local attempts = tonumber(redis.call('HGET', KEYS[4], id) or '0')
    local fate = 'queued'
    if attempts >= max_attempts then
      fate = 'dead'
      redis.call('HDEL', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      forget_key(f, id)
    else
      push_queued(KEYS[2], KEYS[6], id, band_of(spec.priority or 0))
      woken = woken + 1
    end
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = tostring(attempts)
    out[#out + 1] = fate
  end
end
if woken > 0 then
  wake(KEYS[7], woken)
end
return out
