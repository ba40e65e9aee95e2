-- await: register a caller waiting for a job's outcome (the finishing script pushes to done:<id>).
-- With push = '1' the caller has pipelined a BLPOP on done:<id> behind this call: a job already
-- finished gets its outcome pushed right here (and an unknown id a 'missing|' marker), so that
-- BLPOP returns at once and waiting costs one round trip in every case.
-- KEYS: 1 events
-- ARGV: 4 id, 5 push ('1' or '')
-- Returns: 1 = already finished (read it now), 0 = registered (BLPOP done:<id>), -1 = not found.
local id = ARGV[4]
local jk = P .. K_JOB .. id
local f = redis.call('HMGET', jk, 'state', 'result', 'error')
local push = ARGV[5] == '1'
if not f[1] then
  if push then
    redis.call('RPUSH', P .. K_DONE .. id, 'missing|')
    redis.call('EXPIRE', P .. K_DONE .. id, 60)
  end
  return -1
end
if f[1] == 'succeeded' or f[1] == 'failed' or f[1] == 'cancelled' then
  if push then
    local payload = f[3] or ''
    if f[1] == 'succeeded' then payload = f[2] or '' end
    redis.call('RPUSH', P .. K_DONE .. id, f[1] .. '|' .. payload)
    redis.call('EXPIRE', P .. K_DONE .. id, 600)
  end
  return 1
end
redis.call('HINCRBY', jk, 'waiters', 1)
return 0
