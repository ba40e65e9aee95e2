-- claim: pop up to N queued jobs (queues in the order given), mark them running under a lease.
-- KEYS: 1 events, 2 leases zset, 3 fencing-token counter
-- ARGV: 4 worker name, 5 lease_ms, 6 n, 7.. queue names (first = served first)
-- Returns: array of {id, token, attempt, task, payload, max_attempts, timeout_ms, queue, backoff_ms}
-- Cost: O(log n) per claimed job, independent of queue length.
local worker, lease, want = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
for qi = 7, #ARGV do
  if want <= 0 then break end
  local queue = ARGV[qi]
  local qk = P .. K_QUEUE .. queue
  local popped = redis.call('ZPOPMIN', qk, want)
  local claimed = 0
  for j = 1, #popped, 2 do
    local id = popped[j]
    local jk = P .. K_JOB .. id
    local f = redis.call('HMGET', jk, 'state', 'task', 'payload', 'att', 'max', 'timeout', 'backoff')
    if f[1] == 'queued' then
      local att = (tonumber(f[4]) or 0) + 1
      local tok = redis.call('INCR', KEYS[3])
      redis.call('HSET', jk, 'state', 'running', 'att', att, 'token', tok, 'worker', worker,
        'started', NOW)
      redis.call('ZADD', KEYS[2], NOW + lease, id)
      emit(id, 'running', queue, worker)
      out[#out + 1] = {id, tok, att, f[2], f[3], f[5] or '1', f[6] or '', queue, f[7] or ''}
      want = want - 1
      claimed = claimed + 1
    end
  end
  if claimed > 0 then stat(queue, 'running', claimed) end
  -- This worker is full but work remains: pass the wake-up on to another idle worker.
  if want <= 0 and redis.call('ZCARD', qk) > 0 then wake(queue) end
end
return out
