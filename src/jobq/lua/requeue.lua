-- requeue: give running jobs back to their queue without counting the attempt (graceful
-- shutdown past its grace period, or a second Ctrl-C).
-- KEYS: 1 events, 2 leases zset, 3 seq counter
-- ARGV: 4.. pairs: id, token
-- Returns: number of jobs requeued (stale tokens are skipped).
local moved = 0
for i = 4, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'token', 'queue', 'pri', 'att', 'cheld')
  if f[1] == 'running' and f[2] == tok then
    redis.call('ZREM', KEYS[2], id)
    release_slot(jk, f[6])
    redis.call('HSET', jk, 'state', 'queued', 'att', math.max((tonumber(f[5]) or 1) - 1, 0))
    redis.call('HDEL', jk, 'token')
    push_queue(id, f[3], f[4], KEYS[3])
    stat(f[3], 'running', -1)
    emit(id, 'queued', f[3], 'requeued at shutdown')
    moved = moved + 1
  end
end
return moved
