-- cancel: cancel a queued or scheduled job at once; flag a running one (the task sees it).
-- KEYS: 1 events, 2 scheduled zset
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, xkids:<id>, outbox
-- ARGV: 4 id, 5 default result ttl (s)
-- Returns: 1 = cancelled, 2 = running (cancel requested), 0 = already finished, -1 = not found.
local id = ARGV[4]
local jk = P .. K_JOB .. id
local f = redis.call('HMGET', jk, 'state', 'queue', 'ttl', 'waiters', 'ukey', 'kids')
if not f[1] then return -1 end
expect(KEYS[2], 'zset')
expect_outbox()
if f[1] == 'queued' then expect(P .. K_QUEUE .. (f[2] or ''), 'zset') end
if f[1] == 'running' then
  redis.call('HSET', jk, 'cancel', NOW)
  emit(id, 'running', f[2], 'cancel requested')
  return done(2)
end
if f[1] == 'queued' then
  redis.call('ZREM', P .. K_QUEUE .. (f[2] or ''), id)
elseif f[1] == 'scheduled' then
  -- (eta/back-off jobs sit in the scheduled set; those waiting on parents or a slot do not)
  redis.call('ZREM', KEYS[2], id)
  stat(f[2], 'scheduled', -1)
else
  return 0
end
cancel_job(id, jk, f[2], nil, nil, f[4], f[5], nil, f[6], f[3], ARGV[5])
return done(1)
