-- progress: record a running job's progress (fenced: only the attempt that owns the job).
-- KEYS: 1 events
-- Builds: job:<id>
-- ARGV: 4 id, 5 token, 6 fraction (0 to 1), 7 message
-- Returns: 1 = recorded, -2 = this attempt no longer owns the job.
local jk = P .. K_JOB .. ARGV[4]
local f = fields(jk, 'state', 'token', 'queue')
if f[1] ~= 'running' or f[2] ~= ARGV[5] then return -2 end
redis.call('HSET', jk, 'progress', ARGV[6], 'progress_msg', ARGV[7])
emit(ARGV[4], 'running', f[3], 'progress ' .. ARGV[6])
return 1
