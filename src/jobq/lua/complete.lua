-- complete: record the successful outcome of N attempts (fenced by their tokens).
-- KEYS: 1 events, 2 leases zset, then per job: its job hash
--   (declared: a Cluster node moving the slot answers TRYAGAIN while that hash is elsewhere,
--   instead of running without it)
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, xkids:<id>, outbox
-- ARGV: 4 default result ttl (s), 5 n, then per job: id, token, result blob
-- Returns: array of n codes: 1 = recorded, -1 = job not found, -2 = stale token / not running.
-- Errors (nothing written): "JOBQ_ARGS ..." (n does not match the items given),
--   "JOBQ_WRONGTYPE ..." (the outbox is not a stream).
local default_ttl, n = ARGV[4], count(ARGV[5], 5, 3, 'complete')
expect_outbox()
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 3
  local id, tok, blob = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'token', 'queue', 'ttl', 'waiters', 'ukey', 'cheld', 'kids')
  if not f[1] then
    out[i + 1] = -1
  elseif f[1] ~= 'running' or f[2] ~= tok then
    out[i + 1] = -2
  else
    redis.call('HSET', jk, 'state', 'succeeded', 'result', blob, 'finished', NOW)
    try('ZREM', KEYS[2], id)
    stat(f[3], 'running', -1)
    stat(f[3], 'succeeded', 1)
    notify(id, jk, f[5], 'succeeded', blob)
    expire_after(jk, f[4], default_ttl)
    settle(id, jk, 'succeeded', f[6], f[7], f[8])
    emit(id, 'succeeded', f[3])
    out[i + 1] = 1
  end
end
return out
