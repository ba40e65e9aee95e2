-- Shared preamble, prepended to every script by scripts.py (after the K_* key suffixes).
-- ARGV[1] = key base ("{prefix}:"), ARGV[2] = now in ms (0 = use the server clock),
-- ARGV[3] = events stream cap. KEYS[1] is always the events stream.
-- Deadlines come from the server's TIME so clock skew between hosts cannot expire a lease;
-- tests pass an explicit `now` to step time.
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
if NOW == nil or NOW <= 0 then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local MAXLEN = ARGV[3]
local EVENTS = KEYS[1]
local PRI_SPAN = 1099511627776 -- 2^40: FIFO sequence space within one priority level

local function emit(id, state, queue, extra)
  if extra then
    redis.call('XADD', EVENTS, 'MAXLEN', '~', MAXLEN, '*', 'job', id, 'state', state, 'queue', queue, 'info', extra)
  else
    redis.call('XADD', EVENTS, 'MAXLEN', '~', MAXLEN, '*', 'job', id, 'state', state, 'queue', queue)
  end
end

local function stat(queue, field, n)
  redis.call('HINCRBY', P .. K_STATS .. queue, field, n)
end

-- Wake one idle worker of `queue` (at most one marker waits; claimers chain the wake-up).
local function wake(queue)
  local w = P .. K_WAKE .. queue
  if redis.call('LLEN', w) == 0 then
    redis.call('RPUSH', w, '1')
  end
end

-- Put a job into its queue's priority set: higher priority first, FIFO within a priority.
local function push_queue(id, queue, pri, seqkey)
  local seq = redis.call('INCR', seqkey)
  redis.call('ZADD', P .. K_QUEUE .. queue, -(tonumber(pri) or 0) * PRI_SPAN + seq, id)
  wake(queue)
end

-- Release callers blocked in Job.result(): one token per registered waiter.
local function notify(id, jobkey, waiters)
  local n = tonumber(waiters)
  if n and n > 0 then
    local dk = P .. K_DONE .. id
    for _ = 1, n do
      redis.call('RPUSH', dk, '1')
    end
    redis.call('EXPIRE', dk, 600)
    redis.call('HDEL', jobkey, 'waiters')
  end
end

-- Index a job that reached a terminal state, newest last (job lists page through it).
local function finished(id)
  redis.call('ZADD', P .. K_FINISHED, NOW, id)
end

-- Make a terminal job expire after its result TTL (0 or negative = keep forever).
local function expire_after(jobkey, ttl, default_ttl)
  local t = tonumber(ttl) or tonumber(default_ttl) or 0
  if t > 0 then
    redis.call('EXPIRE', jobkey, t)
  end
end
