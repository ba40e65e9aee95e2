-- purge: cancel up to N queued jobs of a queue (their dependents fail, naming them).
-- KEYS: 1 events
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, xkids:<id>, outbox
-- ARGV: 4 queue, 5 max jobs in this call, 6 default result ttl (s)
-- Returns: number of jobs cancelled.
local queue = ARGV[4]
local qk = P .. K_QUEUE .. queue
local n = 0
local limit = math.floor(num(ARGV[5], 'limit'))
expect_outbox()
for _, id in ipairs(redis.call('ZRANGE', qk, 0, limit - 1)) do
  redis.call('ZREM', qk, id)
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'ttl', 'waiters', 'ukey', 'kids')
  if f[1] == 'queued' then
    cancel_job(id, jk, queue, nil, 'purged', f[3], f[4], nil, f[5], f[2], ARGV[6])
    n = n + 1
  end
end
return done(n)
