-- Which of the given jobs Redis holds (in any state), for reconciling with PostgreSQL.
-- KEYS[1]: jobs hash
-- ARGV: job ids
-- Returns: one entry per id: 1 present, 0 missing
local out = {}
for i = 1, #ARGV do
  out[i] = redis.call('HEXISTS', KEYS[1], ARGV[i])
end
return out
