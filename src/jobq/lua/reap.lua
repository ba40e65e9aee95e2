-- reap: take back jobs whose lease expired (worker killed, host gone, worker cut off). A lost
-- worker is not a failed attempt: the attempt is not counted against the task's retries, and the
-- job goes back to the FRONT of its queue (within its priority), since it was next in line.
-- - never began (claimed ahead, still waiting in the worker; `began` ~= its token): released,
--   nothing counted. (A safety net against a begin mark lost in flight, e.g. a job that kills its
--   worker the instant it starts: a release past MAX_RELEASES of one job counts as a loss.)
-- - began: it lost its worker. Its `lost` count goes up and it becomes a suspect, which workers
--   run alone; the `max_lost`-th loss dead-letters it (`WorkerLost`): it keeps killing or losing
--   its worker even when it runs alone (a poison pill). Jobs that merely shared a dying worker
--   lose it once, run alone next and succeed.
-- KEYS: 1 events, 2 leases zset, 3 dead-letter zset, 4 seq counter
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, xkids:<id>, outbox
-- ARGV: 4 max jobs to reap in this call, 5 max_lost (losses of a worker that dead-letter a job)
-- Returns: {requeued (released + lost and retried), dead_lettered, jobs}: jobs lists the first
--          MAX_LISTED jobs taken back, each {id, queue, task, attempt, event, worker}, for
--          the master's transition log lines (maintenance.py).
local MAX_RELEASES = 5
local MAX_LISTED = 100
local max_lost = tonumber(ARGV[5]) or 3
expect(KEYS[3], 'zset')
expect_outbox()
local ids = redis.call('ZRANGE', KEYS[2], '-inf', NOW, 'BYSCORE', 'LIMIT', 0, math.floor(num(ARGV[4], 'limit')))
local requeued, dead = 0, 0
local jobs = {}
local function listed(id, f, event)
  if #jobs < MAX_LISTED then
    jobs[#jobs + 1] = {id, f[2] or '', f[15] or '', tonumber(f[3]) or 0, event, f[7] or ''}
  end
end

-- Latest deadline first: each push goes in front of the one before, so the oldest claim ends
-- up first in line.
bulk('ZREM', KEYS[2], nil, ids) -- (every one read is taken off the leases)
for k = #ids, 1, -1 do
  local id = ids[k]
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'queue', 'att', 'max', 'pri', 'waiters', 'worker',
    'ukey', 'cheld', 'kids', 'token', 'began', 'lost', 'rel', 'task')
  if f[1] == 'running' then
    stat(f[2], 'running', -1)
    local rel = tonumber(f[14]) or 0
    local lost = tonumber(f[13]) or 0
    local began = f[12] and f[12] == f[11]
    if not began and rel < MAX_RELEASES then
      redis.call('HSET', jk, 'rel', rel + 1)
      release_to_queue(id, jk, f[2], f[5], f[3], f[9], KEYS[4],
        'released: never started on lost worker ' .. tostring(f[7]))
      requeued = requeued + 1
      listed(id, f, 'released (never started, lease expired)')
    elseif lost + 1 < max_lost then
      redis.call('HSET', jk, 'lost', lost + 1, 'rel', 0)
      stat(f[2], 'retried', 1)
      release_to_queue(id, jk, f[2], f[5], f[3], f[9], KEYS[4], 'lease expired: worker ' ..
        tostring(f[7]) .. ' lost (' .. tostring(lost + 1) .. ' of ' .. tostring(max_lost) ..
        '); retried alone')
      requeued = requeued + 1
      listed(id, f, 'requeued (lease expired)')
    else
      local err = job_error('WorkerLost', 'job ' .. id ..
        ' was running when its worker died or lost its lease ' .. tostring(lost + 1) ..
        ' time(s), the last on worker ' .. tostring(f[7]) .. '; after the first it ran alone,' ..
        ' so it kills (or hangs) its worker: a poison pill? Fix the task and re-run it' ..
        ' (JOBQ_MAX_LOST=' .. tostring(max_lost) .. ' sets how many losses are tolerated)')
      redis.call('HSET', jk, 'lost', lost + 1)
      dead_letter(id, jk, f[2], err, 'worker lost ' .. tostring(lost + 1) .. ' times', f[6], f[8],
        f[9], f[10])
      dead = dead + 1
      listed(id, f, 'dead-lettered (WorkerLost)')
    end
  end
end
return done({requeued, dead, jobs})
