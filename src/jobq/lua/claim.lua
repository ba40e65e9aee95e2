-- claim: pop up to N queued jobs (queues in the order given), mark them running under a lease.
-- Jobs over their task's rate limit wait in `scheduled` for their reserved slot; jobs whose
-- concurrency key is at its limit wait in that key's list until a slot frees. Neither is dropped.
-- KEYS: 1 events, 2 leases zset, 3 fencing-token counter, 4 scheduled zset, 5 rate limits hash
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, tstats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, rate:<task>, dead, xkids:<id>, outbox
-- ARGV: 4 worker name, 5 lease_ms, 6 n, 7 start (how many of the claimed jobs go into idle
--       slots at once: they are marked begun here, the rest are prefetched and the worker marks
--       them through its heartbeat when they start), 8.. queue names (first = served first)
-- Every claimed job gets `claimed` = now; `started` (when the attempt began running) is set
-- here only for the jobs marked begun, and cleared for the others (a previous attempt's).
-- Returns: array of {id, token, attempt, task, payload, max_attempts, timeout_ms, queue,
--          backoff_ms, pass, {parent result blobs...}, lost, trace, ready_ms, claimed_ms}
--          (trace: the job's trace context or ''; ready_ms: when it became ready to run, the
--          latest of its created, eta and ready times; claimed_ms: now), then, if any popped id was
--          unusable, one notice row {0, n missing, n malformed, {missing ids (first 20)},
--          {malformed ids (first 20)}} (first field 0 = a notice row; a job row starts with its
--          id): missing = no job hash (evicted?), malformed = a hash lacking task/payload or
--          with non-numeric options, dead-lettered as MalformedJob.
-- A job whose earlier worker died under it (lost > 0, a suspect) is not marked begun, nor is any
-- job after it: the worker runs the suspect alone and marks it itself, so that a crash during
-- that run is blamed on the suspect only.
-- Errors (nothing written): "JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..." (a key of another type: the
--   leases, the token counter, the rate limits; the scheduled zset when rate limits are set; a
--   queue found so before the first job is popped; a queue found so after that is skipped, its
--   jobs left in it, and served by the next call that reaches it first).
-- Cost: O(log n) per claimed job, independent of queue length; per call, besides its jobs: the
-- checks above, one ZPOPMIN per queue reached, one ZADD of the leases, one SET of the token
-- counter, one HINCRBY per queue served, and per queue and task served the wait bucket(s)
-- and sum (tstats:<queue>): a claimed job waited from when it became ready (the latest of its
-- `created`, `eta` (a delay, retry or rate-limit slot) and `ready` (dependencies met, a
-- concurrency slot freed, handed back, rerun)) to now.
local worker, lease, want = ARGV[4], num(ARGV[5], 'lease_ms'), math.floor(num(ARGV[6], 'n'))
local start = tonumber(ARGV[7]) or 0
expect(KEYS[2], 'zset')
token_counter(KEYS[3])
-- (no rate limits at all, the common case: no HGET per task, and no scheduled zset needed)
local has_limits = redis.call('TYPE', KEYS[5])['ok']
if has_limits ~= 'none' and has_limits ~= 'hash' then
  fail_early('JOBQ_WRONGTYPE', 'key ' .. KEYS[5] .. ' holds a ' .. has_limits .. ', expected a hash')
end
has_limits = has_limits == 'hash'
if has_limits then expect(KEYS[4], 'zset') end
local out = {}
local leases = {} -- score, id pairs: one ZADD at the end
-- Only a malformed job that has dependents in other partitions writes to the outbox (its
-- hand-offs): checked then, not on every call (outbox_ok: nil = not checked yet).
local outbox_ok = nil
local missing, malformed = {}, {}
local limits = has_limits and {} -- task -> its rate limit (false: none), read once per call

local popped_any = false -- the first job popped is the first write of the call
for qi = 8, #ARGV do
  if want <= 0 then break end
  local queue = ARGV[qi]
  local qk = P .. K_QUEUE .. queue
  local claimed = 0
  -- (the pop checks the queue's type: a failure before any write is raised, nothing written)
  local popped = redis.pcall('ZPOPMIN', qk, want)
  if type(popped) == 'table' and popped.err then
    if popped_any then
      popped = {}
    elseif string.find(popped.err, 'WRONGTYPE', 1, true) then
      fail_early('JOBQ_WRONGTYPE', 'key ' .. qk .. ' holds a ' .. redis.call('TYPE', qk)['ok'] ..
        ', expected a zset')
    else
      error(popped)
    end
  end
  if #popped > 0 then popped_any = true end
  for j = 1, #popped, 2 do
    local id = popped[j]
    local jk = P .. K_JOB .. id
    local f, corrupt = fields(jk, 'state', 'task', 'payload', 'att', 'max', 'timeout',
      'backoff', 'ckey', 'climit', 'pass', 'parents', 'rslot', 'lost', 'xp', 'started', 'created',
      'eta', 'ready', 'trace')
    local why = f[1] == 'queued' and claim_malformation(f)
    local g = why and fields(jk, 'waiters', 'ukey', 'kids') -- (only a malformed job needs these)
    if g and g[3] and outbox_ok == nil then
      outbox_ok = redis.call('TYPE', P .. K_OUTBOX)['ok']
      outbox_ok = outbox_ok == 'none' or outbox_ok == 'stream'
    end
    if corrupt then
      malformed[#malformed + 1] = id -- not a hash: nothing to mark, only the dead-letter entry
      try('ZADD', P .. K_DEAD, NOW, id)
    elseif not f[1] then
      missing[#missing + 1] = id
    elseif g and g[3] and not outbox_ok then
      -- Its hand-offs could not be written (the outbox holds another type): back into its
      -- queue where it was, untouched, rather than dead-lettered without them.
      redis.call('ZADD', qk, popped[j + 1], id)
    elseif why then
      malformed[#malformed + 1] = id
      claim_malformed(id, jk, queue, why, g)
    elseif f[1] == 'queued' then
      local ok = true
      local rl = limits and claim_rate_limit(limits, f[2])
      if rl and f[12] then
        redis.call('HDEL', jk, 'rslot') -- its reserved start slot has come: start it
      elseif rl then
        -- GCRA: starts are spaced period/count apart. A job whose slot is still ahead
        -- reserves it and waits in `scheduled` until then, so a backlog drains at exactly the
        -- limit with no thundering herd.
        local interval = rl[2] / rl[1]
        local rk = P .. K_RATE .. f[2]
        local slot = math.max(tonumber(try('GET', rk)) or 0, NOW)
        redis.call('SET', rk, tostring(slot + interval), 'PX', math.ceil(slot - NOW + interval + rl[2]))
        if slot > NOW then
          redis.call('HSET', jk, 'rslot', slot)
          claim_park(id, jk, queue, math.ceil(slot), 'rate limited')
          ok = false
        end
      end
      if ok and f[8] then
        -- (a corrupt slot counter or wait list does not limit: the job runs rather than wait
        -- in no list)
        local ck = P .. K_CONC .. f[8]
        if (tonumber(try('GET', ck)) or 0) >= (tonumber(f[9]) or 1)
            and try('RPUSH', P .. K_CWAIT .. f[8], id) then
          redis.call('HSET', jk, 'cwait', 1)
          claim_park(id, jk, queue, nil, 'concurrency limit')
          ok = false
        elseif try('INCR', ck) then
          redis.call('HSET', jk, 'cheld', f[8])
        end
      end
      if ok then
        local att = (tonumber(f[4]) or 0) + 1
        local tok = fencing_token() -- a digit string, never reissued
        if f[13] then
          start = 0 -- a suspect: the worker runs it alone, after the jobs before it
        end
        if start > 0 then -- into an idle slot at once: it begins running now
          redis.call('HSET', jk, 'state', 'running', 'att', att, 'token', tok, 'worker', worker,
            'claimed', NOW, 'began', tok, 'started', NOW)
          start = start - 1
        else -- claimed ahead: `started` comes with its begin mark (heartbeat) or its outcome
          redis.call('HSET', jk, 'state', 'running', 'att', att, 'token', tok, 'worker', worker,
            'claimed', NOW)
          if f[15] then redis.call('HDEL', jk, 'started') end -- (a previous attempt's)
        end
        local ready = math.max(tonumber(f[16]) or 0, tonumber(f[17]) or 0, tonumber(f[18]) or 0)
        if ready > 0 then tsample(queue, f[2], 'w', NOW - ready) end
        leases[#leases + 1] = NOW + lease
        leases[#leases + 1] = id
        emit(id, 'running', queue, worker)
        local inputs = {}
        if f[10] and f[11] then
          for pid in string.gmatch(f[11], '[^,]+') do
            -- (a parent in another partition: its result came with its hand-off, deliver.lua)
            local x = f[14] and try('HGET', jk, 'x:' .. pid)
            if x then
              inputs[#inputs + 1] = string.sub(x, (string.find(x, '|', 1, true) or #x) + 1)
            else
              inputs[#inputs + 1] = try('HGET', P .. K_JOB .. pid, 'result') or ''
            end
          end
        end
        out[#out + 1] = {id, tok, att, f[2], f[3], f[5] or '1', f[6] or '', queue, f[7] or '',
          f[10] or '', inputs, f[13] or '0', f[19] or '',
          math.max(tonumber(f[16]) or NOW, tonumber(f[17]) or 0, tonumber(f[18]) or 0), NOW}
        want = want - 1
        claimed = claimed + 1
      end
    end
  end
  if claimed > 0 then stat(queue, 'running', claimed) end
  -- This worker is full but work remains: pass the wake-up on to another idle worker.
  if want <= 0 and redis.call('ZCARD', qk) > 0 then wake(queue, true) end
end
save_tokens()
bulk('ZADD', KEYS[2], nil, leases)
tflush()
if #missing > 0 or #malformed > 0 then
  local function first(t) local r = {} for i = 1, math.min(#t, 20) do r[i] = t[i] end return r end
  out[#out + 1] = {0, #missing, #malformed, first(missing), first(malformed)}
end
return done(out)
