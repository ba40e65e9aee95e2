-- heartbeat: extend the leases of jobs a worker still owns, mark the ones that began running,
-- and mark the worker as seen.
-- KEYS: 1 events, 2 leases zset, 3 workers zset (name -> last seen ms, server clock), then per job: its job hash
--   (declared: a Cluster node moving the slot answers TRYAGAIN while that hash is elsewhere,
--   instead of running without it)
-- Builds: job:<id>
-- ARGV: 4 lease_ms (0 = extend no lease: a call that only marks starts or asks for cancels),
--       5 worker name ('' = don't mark), 6 nb: the first nb pairs also mark their job begun
--       (the reaper then counts a lost lease as a lost worker, not a release) and set its
--       `started` to now (the worker sends a mark as the job starts), then pairs: id, token.
--       Without a worker name (a call that only marks jobs as they start), marked jobs keep
--       their lease as it is: one fewer write per job on that path.
-- Returns: {{lost ids...} (no longer running under this token), {ids whose cancel was requested}}
local lease, nb = num(ARGV[4], 'lease_ms'), tonumber(ARGV[6]) or 0
expect(KEYS[2], 'zset')
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], NOW, ARGV[5]) end
local lost, cancel, extend = {}, {}, {}
for i = 7, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'token', 'cancel')
  if f[1] == 'running' and f[2] == tok then
    local mark = (i - 7) / 2 < nb
    if lease > 0 and (not mark or ARGV[5] ~= '') then
      extend[#extend + 1] = NOW + lease
      extend[#extend + 1] = id
    end
    if mark then redis.call('HSET', jk, 'began', tok, 'started', NOW) end
    if f[3] then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
bulk('ZADD', KEYS[2], 'XX', extend) -- (one ZADD for every lease it extends)
return {lost, cancel}
