-- A reconciliation marker and the run_id of the master serving its slot,
-- read together on that master: on a Redis Cluster the script runs only where its key
-- lives (any other node answers MOVED), so a reply never mixes two nodes, even while the
-- client is still learning a failover.
-- KEYS[1]: the marker (a deployment's, or on a Cluster a queue's): the run_id it was last
--          reconciled under, or a claim while a reconciliation runs
-- Returns: { marker or false, run_id }
local info = redis.call('INFO', 'server')
return { redis.call('GET', KEYS[1]), string.match(info, 'run_id:(%x+)') }
