-- Writes a queue's flow-control settings as PostgreSQL has them (its pause and limits,
-- and every flow key's limits), unless Redis already holds this version or a newer one
-- (a mirror read before a change must not undo it). Workers are woken when anything
-- was written: a resumed queue or a raised limit may have work to start.
-- KEYS[1]: settings hash   KEYS[2]: flow key limits hash   KEYS[3]: signal list
-- ARGV[1]: version (PostgreSQL's count of changes)   ARGV[2]: '1' paused or '0'
-- ARGV[3..5]: rate per second, burst, concurrency ('' for none)
-- ARGV[6..]: pairs: flow key, its limits as "rate,burst,conc"
-- Returns: 1 written, 0 already current
local held = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if held >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local fields = {'v', ARGV[1], 'paused', ARGV[2]}
local names = {'rate', 'burst', 'conc'}
for i = 1, 3 do
  if ARGV[2 + i] ~= '' then
    fields[#fields + 1] = names[i]
    fields[#fields + 1] = ARGV[2 + i]
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
wake(KEYS[3], 32)
return 1
