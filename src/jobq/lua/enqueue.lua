-- enqueue: create N jobs, each queued or scheduled (eta in the future). Idempotent per id.
-- KEYS: 1 events, 2 scheduled zset, 3 seq counter, 4 queues set
-- ARGV: 4 n, then per job 10 fields:
--   id, task, queue, payload, priority, max_attempts, timeout_ms, backoff_ms, result_ttl_s, delay_ms
--   (empty string = default; delay is relative to the server clock, so client skew can't shift it)
-- Returns: array of n integers: 1 = created, 0 = a job with this id already exists (unchanged).
local n = tonumber(ARGV[4])
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 10
  local id, task, queue, payload = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local pri, maxa, tmo, bo, ttl = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9]
  local eta = NOW + (tonumber(ARGV[b + 10]) or 0)
  local jk = P .. K_JOB .. id
  if redis.call('EXISTS', jk) == 1 then
    out[i + 1] = 0
  else
    local state = 'queued'
    if eta > NOW then state = 'scheduled' end
    redis.call('HSET', jk, 'task', task, 'queue', queue, 'payload', payload, 'state', state,
      'created', NOW)
    if pri ~= '' and pri ~= '0' then redis.call('HSET', jk, 'pri', pri) end
    if maxa ~= '' and maxa ~= '1' then redis.call('HSET', jk, 'max', maxa) end
    if tmo ~= '' then redis.call('HSET', jk, 'timeout', tmo) end
    if bo ~= '' then redis.call('HSET', jk, 'backoff', bo) end
    if ttl ~= '' then redis.call('HSET', jk, 'ttl', ttl) end
    if state == 'scheduled' then
      redis.call('HSET', jk, 'eta', eta)
      redis.call('ZADD', KEYS[2], eta, id)
      stat(queue, 'scheduled', 1)
    else
      push_queue(id, queue, pri, KEYS[3])
    end
    redis.call('SADD', KEYS[4], queue)
    emit(id, state, queue)
    out[i + 1] = 1
  end
end
return out
