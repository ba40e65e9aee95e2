-- delete: remove a finished job for good: its hash, its result waiters' list and its entries
-- in the finished and dead-letter indexes. A job still queued, scheduled or running is refused
-- (cancel it first); a key that is not a job hash (corrupt) is removed as well.
-- KEYS: 1 events, 2 finished zset, 3 dead-letter zset
-- Builds: job:<id>, done:<id>, stats:<queue>
-- ARGV: 4 id
-- Returns: 1 = deleted, -1 = not found, -3 = not finished (queued, scheduled or running).
local id = ARGV[4]
local jk = P .. K_JOB .. id
local f, corrupt = fields(jk, 'state', 'queue')
if not corrupt and not f[1] then
  if redis.call('EXISTS', jk) == 0 then return -1 end
  corrupt = true -- a hash without a state: not a job a script wrote
end
local state = f[1]
if not corrupt and state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' then
  if state == 'queued' or state == 'scheduled' or state == 'running' then return -3 end
  corrupt = true -- an unknown state: no worker can run it either
end
expect(KEYS[2], 'zset')
expect(KEYS[3], 'zset')
redis.call('DEL', jk, P .. K_DONE .. id)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
emit(id, corrupt and 'failed' or state, f[2], 'deleted')
return done(1)
