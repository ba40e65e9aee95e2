-- rerun: take a dead-lettered (failed) job out of the dead-letter set and queue it afresh.
-- KEYS: 1 events, 2 dead-letter zset, 3 seq counter
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, dead
-- ARGV: 4 id
-- Returns: 1 = queued again, -1 = not found, -3 = not in state failed.
local id = ARGV[4]
local jk = P .. K_JOB .. id
local f = redis.call('HMGET', jk, 'state', 'queue', 'pri')
if not f[1] then return -1 end
if f[1] ~= 'failed' then return -3 end
redis.call('ZREM', KEYS[2], id)
try('ZREM', P .. K_FINISHED, id)
redis.call('PERSIST', jk)
redis.call('DEL', P .. K_DONE .. id) -- outcomes of the old run must not reach new waiters
redis.call('HDEL', jk, 'finished', 'token', 'result', 'lost', 'rel', 'began', 'unk')
redis.call('HSET', jk, 'state', 'queued', 'att', 0, 'ready', NOW) -- (ready: its queue wait starts now)
push_queue(id, f[2], f[3], KEYS[3])
emit(id, 'queued', f[2], 'rerun')
return done(1)
