-- handback: give back running jobs of a task the claiming worker does not know, for a worker
-- that does: `scheduled` again after a short delay (so the same worker does not claim them
-- straight back), the attempt not counted, the time the job was first found unknown kept in
-- its `unk` field. Only once no live worker has known the task for the grace (counted from
-- the later of `unk` and the item's known-until) is a job left running as it is, for the
-- caller to fail (UnknownTask); so is a job whose cancel was requested (the caller's failure
-- report then ends it `cancelled`, as fail.lua does for every stopped attempt).
-- KEYS: 1 events, 2 leases zset, 3 scheduled zset, then per job: its job hash
--   (declared: a Cluster node moving the slot answers TRYAGAIN while that hash is elsewhere,
--   instead of running without it)
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, seq, conc:<key>, cwait:<key>, dead
-- ARGV: 4 delay ms, 5 grace ms, 6 n, then per job: id, token, known-until ms
--       (server clock: when the last live worker knowing the task stops counting as alive)
-- Returns: array of n codes: 1 = handed back (scheduled after the delay), 0 = grace over
--          (nothing written: the caller fails the job), 2 = its cancel was requested (nothing
--          written: the caller reports it, it ends cancelled), -1 = job not found,
--          -2 = stale token / not running.
-- Errors (nothing written): "JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..." (scheduled not a zset).
local delay, grace = num(ARGV[4], 'delay ms'), num(ARGV[5], 'grace ms')
local n = count(ARGV[6], 6, 3, 'handback')
for i = 0, n - 1 do num(ARGV[6 + i * 3 + 3], 'known-until of item ' .. (i + 1)) end
expect(KEYS[3], 'zset')
local out, leases, due_ids = {}, {}, {}
for i = 0, n - 1 do
  local b = 6 + i * 3
  local id, tok, known = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'token', 'queue', 'att', 'cheld', 'unk', 'cancel')
  if not f[1] then
    out[i + 1] = -1
  elseif f[1] ~= 'running' or f[2] ~= tok then
    out[i + 1] = -2
  elseif f[7] then
    out[i + 1] = 2
  else
    local first = tonumber(f[6]) or NOW
    if NOW - math.max(first, known) >= grace then
      out[i + 1] = 0
    else
      local due = NOW + math.max(delay, 0)
      leases[#leases + 1] = id
      stat(f[3], 'running', -1)
      release_slot(jk, f[5])
      redis.call('HSET', jk, 'state', 'scheduled', 'eta', due, 'unk', first,
        'att', math.max((tonumber(f[4]) or 1) - 1, 0))
      redis.call('HDEL', jk, 'token', 'began')
      due_ids[#due_ids + 1] = due
      due_ids[#due_ids + 1] = id
      stat(f[3], 'scheduled', 1)
      emit(id, 'scheduled', f[3], 'unknown task: handed back')
      out[i + 1] = 1
    end
  end
end
bulk('ZREM', KEYS[2], nil, leases, true) -- (unchecked: a corrupt key is skipped)
bulk('ZADD', KEYS[3], nil, due_ids)
return done(out)
