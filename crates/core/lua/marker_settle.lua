-- Ends a reconciliation: the marker becomes the run_id it was claimed under, but only if
-- the claim is still there and Redis still runs under that run_id. Otherwise Redis lost
-- data while the reconciliation ran (the claim was wiped, or Redis restarted), so the
-- marker stays unsettled and the next check reconciles again.
-- KEYS[1]: the marker   ARGV[1]: the claim `marker_claim.lua` returned
-- Returns: 1 settled, 0 Redis lost data meanwhile (or another reconciliation took over)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local info = redis.call('INFO', 'server')
local run_id = string.match(info, 'run_id:(%x+)')
if string.match(ARGV[1], '^reconciling:(%x+):') ~= run_id then
  return 0
end
redis.call('SET', KEYS[1], run_id)
return 1
