-- orphans: one bounded step of the walk over the queue registry (SSCAN, its cursor kept in a
-- key between calls, so the cost per call is bounded whatever the number of queues).
-- For each queue of the step:
-- * a worker's own queue whose worker is gone (not seen for gone_ms): each job that has waited
--   at least gone_ms moves to its fallback queue if it has one, else fails naming the worker;
-- * a queue with no jobs (none queued, scheduled or running by its gauges) and no live worker
--   serving it leaves the registry, with its counters, task stats and wake-up list: a worker's
--   own queue as soon as the worker is gone; a named or group queue once it has stayed so for
--   gone_ms (the first pass that finds it idle marks it, with its counters' sum: any activity
--   since changes the sum and restarts the wait), so a queue emptied a moment ago stays listed.
--   The next submit to a pruned queue registers it again.
-- Group queues' jobs are left alone: any member of the group may still come.
-- KEYS: 1 events, 2 queues set, 3 workers zset (last seen ms), 4 dead-letter zset, 5 seq, 6 cursor
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, tstats:<queue>, done:<id>,
--   finished, seq, children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, worker:<name>,
--   xkids:<id>, outbox
-- (KEYS[6], a string, holds the SSCAN cursor of the walk between calls.)
-- ARGV: 4 gone_ms, 5 max jobs examined in this call, 6 max queues examined in this call
-- Returns: {jobs moved or failed, queues pruned, pass, jobs}: pass 1 = this call finished a
--          pass over the registry, 0 = the pass goes on at the next call; jobs lists the first
--          MAX_LISTED jobs moved or failed, each {id, queue, task, attempt, event, worker},
--          for the master's transition log lines (maintenance.py).
-- Errors (nothing written): "JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..." (registry/workers/dead).
local gone = num(ARGV[4], 'gone_ms')
local budget = math.floor(num(ARGV[5], 'max jobs'))
local count = math.max(1, math.floor(num(ARGV[6], 'max queues')))
expect(KEYS[2], 'set')
expect(KEYS[3], 'zset')
expect(KEYS[4], 'zset')
expect_outbox()
local cursor = try('GET', KEYS[6]) or '0'
if not string.match(cursor, '^%d+$') then cursor = '0' end
local scan = redis.call('SSCAN', KEYS[2], cursor, 'COUNT', count)
local moved, pruned = 0, 0
local MAX_LISTED = 100
local jobs = {}
local served = nil -- queues named by live workers, read once and only if needed
local function live_served()
  if served then return served end
  served = {}
  local live = redis.call('ZRANGE', KEYS[3], NOW - gone, '+inf', 'BYSCORE', 'LIMIT', 0, 1000)
  for _, w in ipairs(live) do
    local qs = try('HGET', P .. K_WORKER .. w, 'queues')
    if qs then for q in string.gmatch(qs, '[^,]+') do served[q] = true end end
  end
  return served
end

local function empty(queue, qk)
  if (try('ZCARD', qk) or 1) > 0 then return false end
  flush() -- (the counters this call changed so far, before reading them or dropping them)
  local g = try('HMGET', P .. K_STATS .. queue, 'scheduled', 'running') or {}
  return (tonumber(g[1]) or 0) <= 0 and (tonumber(g[2]) or 0) <= 0
end

-- Whether an idle queue has been idle for gone_ms (marking it idle now if it was not).
local function idle_long(queue)
  local sk = P .. K_STATS .. queue
  local g = try('HMGET', sk, 'succeeded', 'failed', 'cancelled', 'retried', 'idle_since',
    'idle_sum')
  if not g then return true end -- counters unreadable (another type): nothing worth keeping
  local sum = 0
  for i = 1, 4 do sum = sum + (tonumber(g[i]) or 0) end
  local since = tonumber(g[5])
  if since and tonumber(g[6]) == sum then return NOW - since >= gone end
  redis.call('HSET', sk, 'idle_since', NOW, 'idle_sum', sum)
  return false
end

local function forget(queue)
  redis.call('SREM', KEYS[2], queue)
  redis.call('DEL', P .. K_STATS .. queue, P .. K_TSTATS .. queue, P .. K_WAKE .. queue)
  WOKEN[queue] = nil -- (its wake-up list is gone: a push later in this call rings it again)
  pruned = pruned + 1
end

for _, queue in ipairs(scan[2]) do
  local qk = P .. K_QUEUE .. queue
  if string.sub(queue, 1, #Q_WORKER) == Q_WORKER then
    local name = string.sub(queue, #Q_WORKER + 1)
    local seen = tonumber(redis.call('ZSCORE', KEYS[3], name))
    if not seen or NOW - seen > gone then
      for _, id in ipairs(budget > 0 and (try('ZRANGE', qk, 0, budget - 1) or {}) or {}) do
        budget = budget - 1
        local jk = P .. K_JOB .. id
        local f = fields(jk, 'state', 'created', 'fallback', 'pri', 'waiters', 'ukey', 'kids',
          'task', 'att')
        if f[1] ~= 'queued' then
          redis.call('ZREM', qk, id)
        elseif NOW - (tonumber(f[2]) or 0) >= gone then
          redis.call('ZREM', qk, id)
          if f[3] then
            redis.call('HSET', jk, 'queue', f[3])
            if push_queue(id, f[3], f[4], KEYS[5]) then
              redis.call('SADD', KEYS[2], f[3])
              emit(id, 'queued', f[3], 'worker ' .. name .. ' gone: fell back')
            end
          else
            dead_letter(id, jk, queue, job_error('WorkerGone', 'worker ' .. name ..
              ' has not been seen for over ' .. math.floor(gone / 1000) .. ' s'),
              'worker gone', f[5], f[6], nil, f[7])
          end
          moved = moved + 1
          if #jobs < MAX_LISTED then
            jobs[#jobs + 1] = {id, f[3] or queue, f[8] or '', tonumber(f[9]) or 0,
              f[3] and 'fell back (worker gone)' or 'dead-lettered (WorkerGone)', name}
          end
        end
      end
      if empty(queue, qk) then forget(queue) end
    end
  elseif empty(queue, qk) and not live_served()[queue] and idle_long(queue) then
    forget(queue) -- a named or group queue nobody has used or served for gone_ms
  end
end
redis.call('SET', KEYS[6], scan[1])
return done({moved, pruned, scan[1] == '0' and 1 or 0, jobs})
