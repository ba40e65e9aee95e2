-- heartbeat: extend the leases of jobs a worker still owns, and mark the worker as seen.
-- KEYS: 1 events, 2 leases zset, 3 workers zset (name -> last seen ms, server clock)
-- ARGV: 4 lease_ms, 5 worker name ('' = don't mark), then pairs: id, token
-- Returns: {{lost ids...} (no longer running under this token), {ids whose cancel was requested}}
local lease = num(ARGV[4], 'lease_ms')
expect(KEYS[2], 'zset')
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], NOW, ARGV[5]) end
local lost, cancel = {}, {}
for i = 6, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i + 1]
  local f = fields(P .. K_JOB .. id, 'state', 'token', 'cancel')
  if f[1] == 'running' and f[2] == tok then
    redis.call('ZADD', KEYS[2], 'XX', NOW + lease, id)
    if f[3] then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
