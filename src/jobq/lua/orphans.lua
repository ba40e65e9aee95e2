-- orphans: settle jobs targeted at a worker that is gone (not seen for gone_ms): each job that
-- has waited at least gone_ms moves to its fallback queue if it has one, else fails naming the
-- worker. Group queues are left alone: any member of the group may still come.
-- KEYS: 1 events, 2 queues set, 3 workers zset (last seen ms), 4 dead-letter zset, 5 seq
-- ARGV: 4 gone_ms, 5 max jobs per queue in this call
-- Returns: number of jobs moved or failed.
local gone, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local moved = 0
for _, queue in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.sub(queue, 1, #Q_WORKER) == Q_WORKER then
    local name = string.sub(queue, #Q_WORKER + 1)
    local seen = tonumber(redis.call('ZSCORE', KEYS[3], name))
    if not seen or NOW - seen > gone then
      local qk = P .. K_QUEUE .. queue
      for _, id in ipairs(redis.call('ZRANGE', qk, 0, limit - 1)) do
        local jk = P .. K_JOB .. id
        local f = redis.call('HMGET', jk, 'state', 'created', 'fallback', 'pri', 'waiters',
          'ukey', 'kids')
        if f[1] ~= 'queued' then
          redis.call('ZREM', qk, id)
        elseif NOW - (tonumber(f[2]) or 0) >= gone then
          redis.call('ZREM', qk, id)
          if f[3] then
            redis.call('HSET', jk, 'queue', f[3])
            push_queue(id, f[3], f[4], KEYS[5])
            redis.call('SADD', KEYS[2], f[3])
            emit(id, 'queued', f[3], 'worker ' .. name .. ' gone: fell back')
          else
            local err = cjson.encode({type = 'WorkerGone', message = 'worker ' .. name ..
              ' has not been seen for over ' .. math.floor(gone / 1000) .. ' s', traceback = ''})
            redis.call('HSET', jk, 'state', 'failed', 'error', err, 'finished', NOW)
            redis.call('ZADD', KEYS[4], NOW, id)
            stat(queue, 'failed', 1)
            notify(id, jk, f[5], 'failed', err)
            settle(id, jk, 'failed', f[6], nil, f[7])
            emit(id, 'failed', queue, 'worker gone')
          end
          moved = moved + 1
        end
      end
    end
  end
end
return moved
