-- fail: record a failed attempt; retry after a back-off while attempts remain, else dead-letter.
-- A job whose cancel was requested before its outcome came ends `cancelled` instead (it stopped
-- because we asked; a retry is not scheduled), its dependents settled as a cancelled job's are,
-- and expires after its result TTL like every other terminal job.
-- KEYS: 1 events, 2 leases zset, 3 scheduled zset, 4 dead-letter zset, then per job: its job hash
--   (declared: a Cluster node moving the slot answers TRYAGAIN while that hash is elsewhere,
--   instead of running without it)
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, tstats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, xkids:<id>, outbox
-- ARGV: 4 default result ttl (s), 5 n, then per job: id, token, error json, retry delay ms
--       (negative = never retry), ran ms (how long before this call the attempt began running,
--       by the worker's clock; negative = unknown)
-- Returns: array of n codes: 1 = retry scheduled, 2 = failed (dead-lettered), 3 = cancelled,
--          -1 = job not found, -2 = stale token / not running.
-- Errors (nothing written): "JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..." (scheduled not a zset when
--   a job of the call retries, dead not a zset when one is dead-lettered, outbox not a stream
--   when one that ends has dependents: the keys the call writes).
-- Every job is read, and its end decided, before the first write; per call, besides its jobs:
-- one ZREM of the leases, one ZADD of the retries, one HINCRBY per queue and counter, one per
-- queue and per-task field (tstats:<queue>: the outcome, the runtime bucket and sum).
local default_ttl, n = ARGV[4], count(ARGV[5], 5, 5, 'fail')
for i = 0, n - 1 do
  -- (the messages are built only for a bad one: this runs per job)
  local delay, ran = ARGV[5 + i * 5 + 4], ARGV[5 + i * 5 + 5]
  if not tonumber(delay) then num(delay, 'retry delay of item ' .. (i + 1)) end
  if not tonumber(ran) then num(ran, 'ran ms of item ' .. (i + 1)) end
end
local out, rows, ended = {}, {}, {}
local retries, deaths, kids = false, false, false
for i = 0, n - 1 do
  local b = 5 + i * 5
  local id, tok, delay = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 4])
  if ended[id] then
    out[i + 1] = -2 -- (named twice: its first item ended this attempt, so no longer running)
  else
    local f = fields(P .. K_JOB .. id, 'state', 'token', 'queue', 'att', 'max', 'waiters', 'ukey',
      'cheld', 'kids', 'cancel', 'ttl', 'claimed', 'task', 'started')
    if not f[1] then
      out[i + 1] = -1
    elseif f[1] ~= 'running' or f[2] ~= tok then
      out[i + 1] = -2
    else
      ended[id] = true
      if f[10] then
        out[i + 1] = 3
      elseif delay >= 0 and (tonumber(f[4]) or 1) < (tonumber(f[5]) or 1) then
        out[i + 1] = 1
        retries = true
      else
        out[i + 1] = 2
        deaths = true
      end
      if out[i + 1] ~= 1 and f[9] then kids = true end
      rows[i + 1] = f
    end
  end
end
if retries then expect(KEYS[3], 'zset') end
if deaths then expect(KEYS[4], 'zset') end
if kids then expect_outbox() end
local leases, due_ids = {}, {}
for i = 0, n - 1 do
  local f = rows[i + 1]
  if f then
    local b = 5 + i * 5
    local id, err, delay = ARGV[b + 1], ARGV[b + 3], tonumber(ARGV[b + 4])
    local ran = tonumber(ARGV[b + 5])
    local jk = P .. K_JOB .. id
    leases[#leases + 1] = id
    stat(f[3], 'running', -1)
    tsample(f[3], f[13], 't', runtime_ms(ran, f[14]))
    if out[i + 1] == 3 then
      note_start(jk, ran, f[12])
      tcount(f[3], f[13], 'c')
      cancelled_running(id, jk, f[3], err, f[6], f[7], f[8], f[9], f[11], default_ttl)
    elseif out[i + 1] == 1 then
      local due = NOW + delay
      release_slot(jk, f[8])
      redis.call('HSET', jk, 'state', 'scheduled', 'error', err, 'eta', due, started(ran, f[12]))
      due_ids[#due_ids + 1] = due
      due_ids[#due_ids + 1] = id
      stat(f[3], 'scheduled', 1)
      stat(f[3], 'retried', 1)
      tcount(f[3], f[13], 'r')
      emit(id, 'scheduled', f[3], 'retry')
    else
      note_start(jk, ran, f[12])
      tcount(f[3], f[13], 'f')
      dead_letter(id, jk, f[3], err, nil, f[6], f[7], f[8], f[9])
    end
  end
end
bulk('ZREM', KEYS[2], nil, leases, true)
bulk('ZADD', KEYS[3], nil, due_ids)
tflush()
return done(out)
