-- reap: requeue jobs whose lease expired (worker killed, host gone); dead-letter them once their
-- attempts are used up, so a job that kills its worker again and again does not loop forever.
-- KEYS: 1 events, 2 leases zset, 3 dead-letter zset, 4 seq counter
-- ARGV: 4 max jobs to reap in this call
-- Returns: {requeued, dead_lettered}
expect(KEYS[3], 'zset')
local ids = redis.call('ZRANGE', KEYS[2], '-inf', NOW, 'BYSCORE', 'LIMIT', 0, math.floor(num(ARGV[4], 'limit')))
local requeued, dead = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'queue', 'att', 'max', 'pri', 'waiters', 'worker',
    'ukey', 'cheld', 'kids')
  if f[1] == 'running' then
    stat(f[2], 'running', -1)
    if (tonumber(f[3]) or 1) < (tonumber(f[4]) or 1) then
      release_slot(jk, f[9])
      redis.call('HSET', jk, 'state', 'queued')
      push_queue(id, f[2], f[5], KEYS[4])
      stat(f[2], 'retried', 1)
      emit(id, 'queued', f[2], 'lease expired')
      requeued = requeued + 1
    else
      local err = cjson.encode({type = 'LeaseExpired', message = 'lease expired on worker ' ..
        tostring(f[7]) .. ' (worker lost?) after ' .. tostring(f[3]) .. ' attempt(s)', traceback = ''})
      redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', NOW)
      redis.call('ZADD', KEYS[3], NOW, id)
      stat(f[2], 'failed', 1)
      notify(id, jk, f[6], 'failed', err)
      settle(id, jk, 'failed', f[8], f[9], f[10])
      emit(id, 'failed', f[2], 'lease expired')
      dead = dead + 1
    end
  end
end
return {requeued, dead}
