-- Starts a reconciliation: replaces the marker with a claim that names the run_id Redis
-- has now and a fresh nonce. Anything that wipes Redis from here on (FLUSHALL, a restart
-- with an empty or older data set, a failover to a replica) also wipes or outdates the
-- claim, so `marker_settle.lua` can tell that the reconciliation did not see it.
-- KEYS[1]: the marker (a deployment's, or on a Cluster a queue's)
-- ARGV[1]: the nonce
-- Returns: the claim written ("reconciling:<run_id>:<nonce>")
local info = redis.call('INFO', 'server')
local claim = 'reconciling:' .. string.match(info, 'run_id:(%x+)') .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], claim)
return claim
