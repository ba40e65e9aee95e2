-- await: register a caller waiting for a job's outcome (the finishing script pushes to done:<id>).
-- With push = '1' the caller has pipelined a BLPOP on done:<id> behind this call: a job already
-- finished gets its outcome pushed right here (and an unknown id a 'missing|' marker), so that
-- BLPOP returns at once and waiting costs one round trip in every case.
-- A caller registers once (mode ''), then renews each further wait slice (mode 'renew': counted
-- again only if its registration was consumed) and leaves when it gives up (mode 'leave'), so
-- `waiters` counts callers, not slices, and stays bounded (at most MAX_WAITERS).
-- KEYS: 1 events
-- Builds: job:<id>, done:<id>
-- ARGV: 4 id, 5 push ('1' or ''), 6 mode ('' | 'renew' | 'leave')
-- Returns: 1 = already finished (read it now), 0 = registered (BLPOP done:<id>), -1 = not found.
local id, mode = ARGV[4], ARGV[6] or ''
local jk = P .. K_JOB .. id
local f = redis.call('HMGET', jk, 'state', 'result', 'error', 'waiters')
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
local n = tonumber(f[4]) or 0
if mode == 'leave' then
  if n > 1 then redis.call('HSET', jk, 'waiters', n - 1) else redis.call('HDEL', jk, 'waiters') end
elseif mode == 'renew' and n > 0 then
  return 0 -- still registered from an earlier slice
elseif n < MAX_WAITERS then
  redis.call('HSET', jk, 'waiters', n + 1)
end
return 0
