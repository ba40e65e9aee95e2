-- complete: record the successful outcome of N attempts (fenced by their tokens). A job whose
-- cancel was requested before its outcome came ends `cancelled` instead, its result discarded
-- (it most likely stopped early because we asked), and its dependents are settled as a
-- cancelled job's are: atomically here, with the outcome.
-- KEYS: 1 events, 2 leases zset, then per job: its job hash
--   (declared: a Cluster node moving the slot answers TRYAGAIN while that hash is elsewhere,
--   instead of running without it)
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, tstats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, xkids:<id>, outbox
-- ARGV: 4 default result ttl (s), 5 n, then per job: id, token, result blob, ran ms (how long
--       before this call the attempt began running, by the worker's clock; negative = unknown)
-- Returns: array of n codes: 1 = recorded, 3 = cancelled (its cancel had been requested: the
--          result is discarded), -1 = job not found, -2 = stale token / not running.
-- Errors (nothing written): "JOBQ_ARGS ..." (n does not match the items given, a ran ms that
--   is not a number), "JOBQ_WRONGTYPE ..." (the outbox is not a stream, when a job of the call
--   has dependents: only they write to it).
-- Every job is read before the first write (so the outbox is checked only when needed); per
-- call, besides its jobs: one ZREM of the leases, one ZADD of the finished index, one HINCRBY
-- per queue and counter, one per queue and per-task field (tstats:<queue>: the outcome, the
-- runtime bucket and sum).
local default_ttl, n = ARGV[4], count(ARGV[5], 5, 4, 'complete')
for i = 0, n - 1 do
  local ran = ARGV[5 + i * 4 + 4]
  -- (the message is built only for a bad one: this runs per job)
  if not tonumber(ran) then num(ran, 'ran ms of item ' .. (i + 1)) end
end
local out, rows, ended = {}, {}, {}
local kids = false
for i = 0, n - 1 do
  local b = 5 + i * 4
  local id, tok = ARGV[b + 1], ARGV[b + 2]
  if ended[id] then
    out[i + 1] = -2 -- (named twice: ended by its first item, so no longer running)
  else
    local f = fields(P .. K_JOB .. id, 'state', 'token', 'queue', 'ttl', 'waiters', 'ukey',
      'cheld', 'kids', 'cancel', 'claimed', 'task', 'started')
    if not f[1] then
      out[i + 1] = -1
    elseif f[1] ~= 'running' or f[2] ~= tok then
      out[i + 1] = -2
    else
      rows[i + 1] = f
      ended[id] = true
      if f[8] then kids = true end
    end
  end
end
if kids then expect_outbox() end
local leases = {}
for i = 0, n - 1 do
  local f = rows[i + 1]
  if f then
    local b = 5 + i * 4
    local id, blob, ran = ARGV[b + 1], ARGV[b + 3], tonumber(ARGV[b + 4])
    local jk = P .. K_JOB .. id
    leases[#leases + 1] = id
    stat(f[3], 'running', -1)
    tsample(f[3], f[11], 't', runtime_ms(ran, f[12]))
    if f[9] then
      note_start(jk, ran, f[10])
      cancelled_running(id, jk, f[3], nil, f[5], f[6], f[7], f[8], f[4], default_ttl)
      tcount(f[3], f[11], 'c')
      out[i + 1] = 3
    else
      redis.call('HSET', jk, 'state', 'succeeded', 'result', blob, 'finished', NOW,
        started(ran, f[10]))
      stat(f[3], 'succeeded', 1)
      tcount(f[3], f[11], 's')
      notify(id, jk, f[5], 'succeeded', blob)
      expire_after(jk, f[4], default_ttl)
      settle(id, jk, 'succeeded', f[6], f[7], f[8])
      emit(id, 'succeeded', f[3])
      out[i + 1] = 1
    end
  end
end
bulk('ZREM', KEYS[2], nil, leases, true)
tflush()
return done(out)
