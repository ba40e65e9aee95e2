-- requeue: give running jobs back to the front of their queue (within their priority) without
-- counting the attempt (graceful shutdown past its grace period, a second Ctrl-C, or jobs the
-- worker took but will not start).
-- KEYS: 1 events, 2 leases zset, 3 seq counter, then per job: its job hash
--   (declared: a Cluster node moving the slot answers TRYAGAIN while that hash is elsewhere,
--   instead of running without it)
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, seq, conc:<key>, cwait:<key>, dead
-- ARGV: 4.. pairs: id, token
-- Returns: number of jobs requeued (stale tokens are skipped).
local moved = 0
local leases = {}
-- Last pair first: each push goes in front of the one before, so the jobs keep their order.
for i = #ARGV - 1, 4, -2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'token', 'queue', 'pri', 'att', 'cheld')
  if f[1] == 'running' and f[2] == tok then
    leases[#leases + 1] = id
    stat(f[3], 'running', -1)
    release_to_queue(id, jk, f[3], f[4], f[5], f[6], KEYS[3], 'requeued at shutdown')
    moved = moved + 1
  end
end
bulk('ZREM', KEYS[2], nil, leases, true) -- (unchecked: a corrupt key is skipped)
return done(moved)
