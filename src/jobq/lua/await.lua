-- await: register a caller waiting for a job's outcome (the finishing script pushes to done:<id>).
-- KEYS: 1 events
-- ARGV: 4 id
-- Returns: 1 = already finished (read it now), 0 = registered (BLPOP done:<id>), -1 = not found.
local jk = P .. K_JOB .. ARGV[4]
local s = redis.call('HGET', jk, 'state')
if not s then return -1 end
if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 1 end
redis.call('HINCRBY', jk, 'waiters', 1)
return 0
