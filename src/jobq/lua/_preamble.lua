-- Shared preamble of the function library. scripts.py builds the library from the K_*
-- key suffixes, this preamble, and each lua/<name>.lua registered as one function, so these
-- helpers are created once when the library loads, not on every call (as EVALSHA would).
-- Every function starts with begin(): ARGV[1] = key base ("{prefix}:"), ARGV[2] = now in ms
-- (0 = use the server clock), ARGV[3] = events stream cap; KEYS[1] is always the events stream.
-- Deadlines come from the server's TIME so clock skew between hosts cannot expire a lease;
-- tests pass an explicit `now` to step time.
-- Each script's header lists its KEYS and, under Builds:, the keys it builds from the key base
-- (itself or through a helper below): per job, queue or key, so they cannot be passed ahead;
-- all share the base's hash tag, hence the slot of its KEYS.
-- Writes are what a call costs (each redis.call from Lua costs about as much as the command
-- itself), so side indexes a call touches once per job are gathered in the call and written
-- once at its end (done(), below): the counters (stat), the finished index (finished), the
-- wake-ups (wake, once per queue), and each script's own variadic ZADD/ZREM (bulk). These
-- start empty in every call: made anew only after a call used them (every table a call makes
-- is garbage the server's Lua collector then works through, a cost per call like any other).
local KEYS, ARGV, P, NOW, MAXLEN, EVENTS
local STATS, STAT_ORDER, GATHERED, GATHER_ORDER, WOKEN = {}, {}, {}, {}, {}
local TSTATS, TSTAT_ORDER = {}, {} -- per-task figures (tstat, below): queue -> task -> kind -> n
local function begin(keys, args)
  KEYS, ARGV = keys, args
  P = args[1]
  NOW = tonumber(args[2])
  if NOW == nil or NOW <= 0 then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  MAXLEN = tonumber(args[3]) or 100000
  EVENTS = keys[1]
  -- (left over by a call that failed half-way, or not flushed: orphans reads them back)
  if STAT_ORDER[1] then STATS, STAT_ORDER = {}, {} end
  if GATHER_ORDER[1] then GATHERED, GATHER_ORDER = {}, {} end
  if TSTAT_ORDER[1] then TSTATS, TSTAT_ORDER = {}, {} end
  if next(WOKEN) then WOKEN = {} end
end
local PRI_SPAN = 1099511627776 -- 2^40: FIFO sequence space within one priority level
-- Most messages one outcome pushes to its waiters (each waiter registers once, see await).
local MAX_WAITERS = 1000

-- Checked before the first write. Valkey does not roll back a script that fails half-way, so a
-- script validates its ARGV and the type of every key it depends on first, and raises here
-- ("JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..."); nothing is written then.
local function fail_early(kind, msg)
  error({err = kind .. ' ' .. msg})
end

local function num(v, what)
  local n = tonumber(v)
  if n == nil then fail_early('JOBQ_ARGS', what .. ' must be a number, got ' .. tostring(v)) end
  return n
end

-- A count of items in ARGV: a whole number, and exactly `per` fields each after `head`.
local function count(v, head, per, what)
  local n = num(v, what .. ': n')
  if n ~= math.floor(n) or #ARGV ~= head + n * per then
    fail_early('JOBQ_ARGS', what .. ': n = ' .. tostring(v) .. ' but ' .. (#ARGV - head) ..
      ' item fields (' .. per .. ' per item)')
  end
  return n
end

local function expect(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    fail_early('JOBQ_WRONGTYPE', 'key ' .. key .. ' holds a ' .. t .. ', expected a ' .. want)
  end
end

-- A counter INCR will run on: absent or a string holding an integer. Returns its value (0 when
-- absent). (One GET: it fails on a key of another type, so it checks the type too.)
local function expect_counter(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then
    fail_early('JOBQ_WRONGTYPE', 'key ' .. key .. ' holds a ' .. redis.call('TYPE', key)['ok'] ..
      ', expected a string')
  end
  if v and not string.match(v, '^%-?%d+$') then
    fail_early('JOBQ_WRONGTYPE', 'key ' .. key .. ' holds ' .. string.sub(v, 1, 40) ..
      ', expected an integer counter')
  end
  return tonumber(v) or 0
end

-- The first write of a call that needs `n` numbers from counter `key`: INCRBY, its failure (a
-- key of another type, or not an integer) raised as JOBQ_WRONGTYPE, so nothing is written
-- then (which is why it must come first). Returns the counter before the increment.
local function take_numbers(key, n)
  local r = redis.pcall('INCRBY', key, n)
  if type(r) == 'table' and r.err then
    fail_early('JOBQ_WRONGTYPE', 'key ' .. key .. ' is not an integer counter: ' .. tostring(r.err))
  end
  return r - n
end

-- A write to a side index or counter (events, stats, wake-ups, waiters, unique/concurrency
-- keys) on a key someone corrupted: skipped (nil) instead of aborting a transition half-way.
local function try(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return nil end
  return r
end

-- One variadic command for many items of one call: `cmd key [flag] items...` (items: a flat
-- list), in chunks that stay well inside Lua's limit on unpack. `side` = a side index (try:
-- a corrupt key is skipped); else a key the script checked, so an error surfaces.
local CHUNK = 2000
local function bulk(cmd, key, flag, items, side)
  local call = side and try or redis.call
  local i, m = 1, #items
  while i <= m do
    local j = math.min(i + CHUNK - 1, m)
    if flag then
      call(cmd, key, flag, unpack(items, i, j))
    else
      call(cmd, key, unpack(items, i, j))
    end
    i = j + 1
  end
end

-- A job hash's fields, or all nil (and true) when the key holds another type: a corrupt job
-- reads as a missing one instead of failing the script after its first write.
local function fields(jk, ...)
  local r = redis.pcall('HMGET', jk, ...)
  if type(r) == 'table' and r.err then return {}, true end
  return r, false
end

local function emit(id, state, queue, extra)
  queue = queue or '' -- (a job hash lacking its queue must not fail the script here)
  -- (pcall, as try() but without its varargs: a corrupt events key is skipped; runs per job)
  if extra then
    redis.pcall('XADD', EVENTS, 'MAXLEN', '~', MAXLEN, '*', 'job', id, 'state', state, 'queue',
      queue, 'info', extra)
  else
    redis.pcall('XADD', EVENTS, 'MAXLEN', '~', MAXLEN, '*', 'job', id, 'state', state, 'queue',
      queue)
  end
end

-- Count `n` into a queue's counter `field`: summed over the call, written by done() (one
-- HINCRBY per queue and field a call touched, not one per job).
local function stat(queue, field, n)
  if not queue then return end
  -- (by queue: the key is built once per queue, by flush; STAT_ORDER: queue, field pairs)
  local q = STATS[queue]
  if not q then
    q = {}
    STATS[queue] = q
  end
  local v = q[field]
  if not v then
    v = 0
    STAT_ORDER[#STAT_ORDER + 1] = queue
    STAT_ORDER[#STAT_ORDER + 1] = field
  end
  q[field] = v + n
end

-- Append a, b to the list groups[key] (made on first use, its key appended to order): how a
-- call gathers pairs per key (score, member) to write each key once.
local function append_pair(groups, order, key, a, b)
  local g = groups[key]
  if not g then
    g = {}
    groups[key] = g
    order[#order + 1] = key
  end
  g[#g + 1] = a
  g[#g + 1] = b
end

-- Add score, member to a side index (a zset), in one ZADD per key by done().
local function gather(key, score, member)
  append_pair(GATHERED, GATHER_ORDER, key, score, member)
end

-- Write the counters and side indexes gathered so far (done() does at the end; a script that
-- reads them back, orphans, first).
local function flush()
  local sk, last = nil, nil
  for i = 1, #STAT_ORDER, 2 do
    local queue, field = STAT_ORDER[i], STAT_ORDER[i + 1]
    if queue ~= last then sk, last = P .. K_STATS .. queue, queue end
    try('HINCRBY', sk, field, STATS[queue][field])
  end
  for _, key in ipairs(GATHER_ORDER) do bulk('ZADD', key, nil, GATHERED[key], true) end
  if STAT_ORDER[1] then STATS, STAT_ORDER = {}, {} end
  if GATHER_ORDER[1] then GATHERED, GATHER_ORDER = {}, {} end
end

-- The end of every script that writes: `return done(reply)`.
local function done(reply)
  flush()
  return reply
end

-- Wake one idle worker of `queue` (at most one marker waits; claimers chain the wake-up): one
-- RPUSH, cut back to one marker when one was waiting already; once per queue and call.
-- `busy`: a marker most likely waits already (a claim passing the wake-up on while work
-- remains: no idle worker has taken the last one), so one LLEN, and a push only when none
-- waits, is the cheaper way to the same one marker.
local function wake(queue, busy)
  if WOKEN[queue] then return end
  WOKEN[queue] = true
  local w = P .. K_WAKE .. queue
  if busy then
    if try('LLEN', w) == 0 then try('RPUSH', w, '1') end
    return
  end
  local len = try('RPUSH', w, '1')
  if len and len > 1 then try('LTRIM', w, 0, 0) end
end

-- A job's error as stored (JSON, as a task's error is), for the failures a script decides.
local function job_error(kind, message)
  return cjson.encode({type = kind, message = message, traceback = ''})
end

-- The two writes that put a job in the dead-letter set: state `failed` with `err` (JSON),
-- finished now. Every dead-lettering goes through here (most through dead_letter below).
local function mark_dead(id, jk, err)
  redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', NOW)
  try('ZADD', P .. K_DEAD, NOW, id)
end

-- Put a job into its queue's priority set: higher priority first, FIFO within a priority.
-- (A batch passes `seq` from one INCRBY and `nowake`, waking each queue once itself.)
-- A queue key of another type could never be claimed from: the job is dead-lettered, saying
-- why, rather than left `queued` in no queue. Returns false then. (Only marked dead: it is
-- not counted, nor are its waiters told or its dependents settled, unlike dead_letter.)
local function push_queue(id, queue, pri, seqkey, nowake, seq)
  seq = seq or try('INCR', seqkey) or 0
  local qk = P .. K_QUEUE .. (queue or '')
  if not queue or not try('ZADD', qk, -(tonumber(pri) or 0) * PRI_SPAN + seq, id) then
    mark_dead(id, P .. K_JOB .. id, job_error(queue and 'MalformedQueue' or 'MalformedJob',
      queue and ('key ' .. qk .. ' is not a sorted set, so job ' .. id ..
      ' could not be queued') or 'job hash lacks field queue'))
    emit(id, 'failed', queue, 'malformed queue')
    return false
  end
  if not nowake then wake(queue) end
  return true
end

-- Release callers blocked in Job.result(): one message per registered waiter (at most
-- MAX_WAITERS, in one RPUSH), carrying the outcome ("<state>|<result blob or error json>") so
-- the waiter needs no second round trip.
local function notify(id, jobkey, waiters, state, payload)
  local n = math.min(tonumber(waiters) or 0, MAX_WAITERS)
  if n > 0 then
    local dk = P .. K_DONE .. id
    local msg = state .. '|' .. (payload or '')
    local msgs = {}
    for i = 1, n do msgs[i] = msg end
    try('RPUSH', dk, unpack(msgs))
    try('EXPIRE', dk, 600)
    redis.call('HDEL', jobkey, 'waiters')
  end
end

-- Index a job that reached a terminal state, newest last (job lists page through it).
-- (Gathered, written by done().)
local function finished(id)
  gather(P .. K_FINISHED, NOW, id)
end

-- Give back a job's concurrency-key slot, and queue the next job waiting for that key.
local function release_slot(jk, ckey)
  if not ckey then return end
  redis.call('HDEL', jk, 'cheld')
  local left = try('DECR', P .. K_CONC .. ckey)
  if left and left < 0 then redis.call('SET', P .. K_CONC .. ckey, 0) end
  while true do
    local wid = try('LPOP', P .. K_CWAIT .. ckey)
    if not wid then return end
    local wjk = P .. K_JOB .. wid
    local wf = fields(wjk, 'state', 'queue', 'pri', 'cwait')
    if wf[1] == 'scheduled' and wf[4] then
      redis.call('HDEL', wjk, 'cwait')
      redis.call('HSET', wjk, 'state', 'queued', 'ready', NOW)
      stat(wf[2], 'scheduled', -1)
      push_queue(wid, wf[2], wf[3], P .. K_SEQ)
      emit(wid, 'queued', wf[2], 'concurrency slot free')
      return
    end
  end
end

local function drop_unique(id, ukey)
  if ukey and try('GET', P .. K_UNIQUE .. ukey) == id then
    redis.call('DEL', P .. K_UNIQUE .. ukey)
  end
end

local dead_letter -- (defined below settle, which uses it for the dependents it fails)

-- Children in other partitions (link.lua registered them in xkids:<id>): one hand-off record
-- each, appended to this partition's outbox by the script that settles the job, so a record
-- exists exactly when the outcome does (a failover loses both or neither). handoff.py delivers
-- them (deliver.lua in the child's partition, idempotent) and then deletes them. A child that
-- wants results gets this job's result in its record. Every script that can settle a job calls
-- expect_outbox() before its first write, so the XADD here cannot fail half-way.
local function expect_outbox()
  expect(P .. K_OUTBOX, 'stream')
end

local function hand_off(id, jk, state)
  local xk = P .. K_XKIDS .. id
  local members = try('SMEMBERS', xk)
  if not members or #members == 0 then return end
  redis.call('DEL', xk)
  local result
  for _, m in ipairs(members) do
    local part, pass, kid = string.match(m, '^(%d+)|(%d)|(.+)$')
    if part then
      if pass == '1' and state == 'succeeded' then
        result = result or try('HGET', jk, 'result') or ''
        redis.call('XADD', P .. K_OUTBOX, '*', 'c', part, 'k', kid, 'p', id, 's', state,
          'r', result)
      else
        redis.call('XADD', P .. K_OUTBOX, '*', 'c', part, 'k', kid, 'p', id, 's', state)
      end
    end
  end
end

-- Fail dependents waiting on a parent that failed or was cancelled, and their own dependents
-- (iteratively), naming the parent; remote ones get a hand-off each. `stack` holds
-- {child id, parent id} pairs. (A cancelled or finished child is left alone.)
local function fail_dependents(stack, state)
  while #stack > 0 do
    local item = table.remove(stack)
    local kid, parent = item[1], item[2]
    local kjk = P .. K_JOB .. kid
    local kf = fields(kjk, 'state', 'queue', 'waiters', 'ukey', 'kids')
    if kf[1] == 'scheduled' then
      redis.call('HDEL', kjk, 'waiting')
      stat(kf[2], 'scheduled', -1)
      -- (its own dependents are pushed on the stack below, not settled by a nested call)
      dead_letter(kid, kjk, kf[2], job_error('DependencyFailed',
        'parent job ' .. parent .. ' ' .. state), 'dependency failed', kf[3], kf[4], nil, nil)
      if kf[5] then
        hand_off(kid, kjk, 'failed')
        local gk = P .. K_CHILDREN .. kid
        for _, g in ipairs(try('SMEMBERS', gk) or {}) do stack[#stack + 1] = {g, kid} end
        redis.call('DEL', gk)
      end
    end
  end
end

-- Queue a dependent whose last pending parent just succeeded (HINCRBY on its count).
local function release_dependent(kid)
  local kjk = P .. K_JOB .. kid
  local kf = fields(kjk, 'state', 'queue', 'pri')
  -- (a cancelled or expired child is left alone: no write may recreate its hash)
  if kf[1] == 'scheduled' and (try('HINCRBY', kjk, 'waiting', -1) or 0) <= 0 then
    redis.call('HSET', kjk, 'state', 'queued', 'ready', NOW)
    redis.call('HDEL', kjk, 'waiting')
    stat(kf[2], 'scheduled', -1)
    push_queue(kid, kf[2], kf[3], P .. K_SEQ)
    emit(kid, 'queued', kf[2], 'dependencies met')
  end
end

-- A job reached a terminal state: index it, drop its unique key, free its concurrency slot,
-- and settle its dependents: queue those whose parents all succeeded, or fail them (and their
-- own dependents, iteratively) naming the parent that failed; dependents in other partitions
-- get a hand-off record each (hand_off). O(children), not O(all jobs).
-- ukey, cheld (its concurrency key), kids = the job's fields of those names.
local function settle(id, jk, state, ukey, cheld, kids)
  finished(id)
  drop_unique(id, ukey)
  release_slot(jk, cheld)
  if not kids then return end
  hand_off(id, jk, state)
  local ck = P .. K_CHILDREN .. id
  local children = try('SMEMBERS', ck) or {}
  redis.call('DEL', ck)
  if state == 'succeeded' then
    for _, kid in ipairs(children) do release_dependent(kid) end
    return
  end
  local stack = {}
  for _, kid in ipairs(children) do stack[#stack + 1] = {kid, id} end
  fail_dependents(stack, state)
end

-- Make a terminal job expire after its result TTL (0 or negative = keep forever). The TTL is
-- clamped to an integer EXPIRE accepts (a malformed one must not fail the script half-way).
local MAX_TTL_S = 100 * 366 * 86400
local function expire_after(jobkey, ttl, default_ttl)
  local t = tonumber(ttl) or tonumber(default_ttl) or 0
  if t > 0 then
    redis.call('EXPIRE', jobkey, math.max(1, math.floor(math.min(t, MAX_TTL_S))))
  end
end

-- The end of a job that failed for good: `failed` with `err` (JSON) in the dead-letter set,
-- counted, its result waiters told, settled (its dependents fail naming it), one event with
-- `info`. waiters, ukey, cheld, kids = the job's fields of those names (nil when absent).
-- (Does not expire the job: a dead-lettered job stays until trim_dead drops it.)
dead_letter = function(id, jk, queue, err, info, waiters, ukey, cheld, kids)
  mark_dead(id, jk, err)
  stat(queue, 'failed', 1)
  notify(id, jk, waiters, 'failed', err)
  settle(id, jk, 'failed', ukey, cheld, kids)
  emit(id, 'failed', queue, info)
end

-- The end of a cancelled job: `cancelled` (with `err`, the error of the attempt a requested
-- cancel stopped, if any), counted, its waiters told, settled (its dependents fail naming
-- it), expiring after its result TTL (`ttl` field, else `default_ttl`), one event with `info`.
local function cancel_job(id, jk, queue, err, info, waiters, ukey, cheld, kids, ttl, default_ttl)
  if err then
    redis.call('HSET', jk, 'state', 'cancelled', 'error', err, 'finished', NOW)
  else
    redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW)
  end
  stat(queue, 'cancelled', 1)
  notify(id, jk, waiters, 'cancelled', err)
  expire_after(jk, ttl, default_ttl)
  settle(id, jk, 'cancelled', ukey, cheld, kids)
  emit(id, 'cancelled', queue, info)
end

-- Give a running job back to the FRONT of its queue (within its priority: it was next in line
-- when it was claimed) without counting the attempt: its concurrency slot freed, its token
-- void, one `queued` event with `info`. The caller takes it off the leases and fixes the
-- running gauge. Like push_queue, a queue key of another type dead-letters the job instead.
-- Front: -pri * 2^40 - seq sorts after every job of a higher priority (their scores are
-- -(pri+1) * 2^40 + small seq) and before every job of its own; `seqkey` = the seq counter.
local function release_to_queue(id, jk, queue, pri, att, cheld, seqkey, info)
  release_slot(jk, cheld)
  redis.call('HSET', jk, 'state', 'queued', 'att', math.max((tonumber(att) or 1) - 1, 0),
    'ready', NOW)
  redis.call('HDEL', jk, 'token', 'began', 'claimed', 'started')
  push_queue(id, queue, pri, nil, false, -(try('INCR', seqkey) or 0))
  emit(id, 'queued', queue, info)
end

-- When a reported attempt began running: `ran` ms before now, as the worker measured it on its
-- own clock (so no clock skew between hosts enters), never before its claim (`claimed`, the
-- job's field). A negative `ran` (unknown) keeps what the claim or the begin mark wrote.
-- (started: the same as the last arguments of the caller's own HSET of the outcome: the field
-- and its value, or nothing.)
local function started(ran, claimed)
  if ran >= 0 then return 'started', math.max(NOW - math.floor(ran), tonumber(claimed) or 0) end
end
local function note_start(jk, ran, claimed)
  if ran >= 0 then redis.call('HSET', jk, started(ran, claimed)) end
end

-- The end of an attempt whose cancel was requested before its outcome came: whatever it
-- returned or raised, the job ends `cancelled` (a result is discarded) and its dependents are
-- settled as a cancelled job's are. `err` = the attempt's error (nil: it returned a value).
local function cancelled_running(id, jk, queue, err, waiters, ukey, cheld, kids, ttl, default_ttl)
  cancel_job(id, jk, queue, err or job_error('JobCancelled', 'job ' .. id ..
    ' was cancelled while running; its result was discarded'), 'cancelled while running',
    waiters, ukey, cheld, kids, ttl, default_ttl)
end

-- Fencing tokens: a hybrid logical clock, so a token is never reissued, even by a server that
-- lost its last writes (AOF cut back to the last fsync by a power cut, a restart from an older
-- AOF, a failover to a replica that lagged). A token is max(previous + 1, NOW * TOKEN_SCALE):
-- its high part is an epoch in server milliseconds, its low ten bits count claims within that
-- millisecond. The counter key may roll back with the lost writes, but the server clock does
-- not: every token issued after a restart is above (restart time) * 1024, hence above every
-- token issued before the cut, as long as the counter never ran ahead of the clock by more
-- than the outage lasted (it runs ahead only above 1024 claims per ms, ~1M claims/s sustained;
-- a restart takes far longer than the few ms a burst can build up). Tokens stay strictly
-- increasing, so tasks may compare them (as integers) on their side effects. (A per-start run
-- id survives a rollback too, but it is not ordered and a script would need INFO to read it;
-- the clock gives the epoch, and its order, for one INCR.)
-- Numbers: ms * 2^10 stays below Lua's 2^53 exact-integer limit until the year 2248; the value
-- is formatted with %d (tostring would give '1.8432e+15') and handed out as a string, so
-- redis-py and Python read it exactly. A failover to a replica whose clock lags the old
-- primary's by more than the outage could reissue tokens: epoch.lua, which every connection
-- runs first, rebases the counter to (now + margin) * 1024 whenever the primary's identity
-- (run id, replication id) changed, so a new primary starts above the old one's tokens.
-- A call reads the counter once (token_counter: its check too), issues its tokens here, and
-- writes the last one back once (save_tokens): the same tokens as an INCR per claim (and a SET
-- on each rebase), for one GET and one SET per call. (Nothing else writes the counter during a
-- call: a script runs alone.)
local TOKEN_SCALE = 1024
local token_key, last_token, tokens_issued
local function token_counter(counter)
  token_key, last_token, tokens_issued = counter, expect_counter(counter), false
end
local function fencing_token()
  -- (the first claim in this ms, or after a rollback, rebases on the clock)
  last_token = math.max(last_token + 1, NOW * TOKEN_SCALE + 1)
  tokens_issued = true
  return string.format('%d', last_token)
end
local function save_tokens()
  if tokens_issued then redis.call('SET', token_key, string.format('%d', last_token)) end
end

-- enqueue's helpers: here, built once when the library loads rather than on every call
-- (a script body's own tables and closures are made anew each time it runs).
-- One job's options record, decoded and checked whole (before anything is written): integers
-- come back as digit strings, as the hash stores them, so the rest reads them like ARGV.
local OPTION = {pri = 'int', max = 'int', timeout = 'int', backoff = 'int', ttl = 'int',
  delay = 'int', climit = 'int', parents = 'string', pass = 'string', ukey = 'string',
  ckey = 'string', fallback = 'string', trace = 'string'}
local DEFAULTS = {}
local EXACT = 2 ^ 53 -- (integers below this are exact in a Lua number)
local function enqueue_options(id, rec)
  if rec == '' then return DEFAULTS end
  local ok, o = pcall(cjson.decode, rec)
  local bad = (not ok or type(o) ~= 'table') and 'not a JSON object'
  if not bad then
    for k, v in pairs(o) do
      local want = OPTION[k]
      if want == 'int' then
        -- (v % 1 is 0 for a whole number only: not for a fraction, an infinity or a NaN)
        if type(v) ~= 'number' or v % 1 ~= 0 or v >= EXACT or v <= -EXACT then
          bad = 'option ' .. k .. ' is not an integer'
          break
        end
        o[k] = string.format('%d', v) -- (assigning an existing key is allowed during pairs)
      elseif want ~= type(v) then
        bad = want and ('option ' .. k .. ' is not a ' .. want) or
          ('unknown option ' .. tostring(k))
        break
      end
    end
  end
  if bad then
    fail_early('JOBQ_ARGS', 'enqueue: job ' .. id .. ': options record ' .. string.sub(rec, 1, 80) ..
      ': ' .. bad)
  end
  return o
end

local LINKED = {pending = true, succeeded = true, failed = true, cancelled = true}
-- Decode the remote parents field of job `id` (see above): {parent id -> {state, result}}.
local function enqueue_remote_parents(s, id, parents)
  local out, i = {}, 1
  while i <= #s do
    local st, li, lr, j = string.match(s, '^(%l+):(%d+):(%d+):()', i)
    li, lr = tonumber(li), tonumber(lr)
    if not st or not LINKED[st] or li == 0 or j + li + lr - 1 > #s then
      fail_early('JOBQ_ARGS', 'enqueue: remote parents of ' .. id .. ' malformed at byte ' .. i)
    end
    local pid = string.sub(s, j, j + li - 1)
    if not string.find(',' .. parents .. ',', ',' .. pid .. ',', 1, true) then
      fail_early('JOBQ_ARGS', 'enqueue: remote parent ' .. pid .. ' is not a parent of ' .. id)
    end
    out[pid] = {st, string.sub(s, j + li, j + li + lr - 1)}
    i = j + li + lr
  end
  return out
end

-- claim's helpers (built once, as enqueue's above).
local function numeric_or_absent(v)
  return v == false or v == nil or v == '' or string.match(v, '^%-?%d+$') ~= nil
end
-- Why a popped job cannot be run (nil if it can): checked before anything is written for it.
local function claim_malformation(f)
  if not f[2] then return 'job hash lacks field task' end
  if not f[3] then return 'job hash lacks field payload' end
  if not (numeric_or_absent(f[5]) and numeric_or_absent(f[6]) and numeric_or_absent(f[7])) then
    return 'job hash has a max, timeout or backoff that is not an integer'
  end
  return nil
end
-- Dead-letter a job the claim cannot run, with an error naming what is wrong with it (g: its
-- fields waiters, ukey, kids).
local function claim_malformed(id, jk, queue, why, g)
  dead_letter(id, jk, queue, job_error('MalformedJob', why), 'malformed job', g[1], g[2], nil,
    g[3])
end
-- A task's rate limit {count, period ms}, or false: read from claim's KEYS[5] (a hash, checked)
-- once per task and call, cached in `limits`.
local function claim_rate_limit(limits, task)
  local l = limits[task]
  if l == nil then
    l = false
    local spec = redis.call('HGET', KEYS[5], task)
    if spec then
      local count, period = string.match(spec, '^(%d+):(%d+)$')
      if count and tonumber(count) > 0 and tonumber(period) > 0 then
        l = {tonumber(count), tonumber(period)}
      end
    end
    limits[task] = l
  end
  return l
end

-- Park a job in `scheduled` (it keeps its place in no queue; promote or a slot brings it back).
local function claim_park(id, jk, queue, due, info)
  redis.call('HSET', jk, 'state', 'scheduled')
  if due then
    redis.call('HSET', jk, 'eta', due)
    redis.call('ZADD', KEYS[4], due, id)
  end
  stat(queue, 'scheduled', 1)
  emit(id, 'scheduled', queue, info)
end

