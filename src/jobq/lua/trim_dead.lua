-- trim_dead: drop dead-lettered jobs older than the retention, a bounded batch per call: out
-- of the dead-letter set, and their hashes (with result waiters' lists) deleted, unless the
-- job left state failed meanwhile (re-run), which only leaves the set.
-- KEYS: 1 events, 2 dead-letter zset, 3 finished zset
-- Builds: job:<id>, done:<id>
-- ARGV: 4 cut-off ms (dead-lettered at or before it are dropped), 5 max jobs in this call
-- Returns: number of jobs dropped.
local cutoff, limit = num(ARGV[4], 'cut-off ms'), math.floor(num(ARGV[5], 'limit'))
expect(KEYS[3], 'zset')
local ids = redis.call('ZRANGE', KEYS[2], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, limit)
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  local jk = P .. K_JOB .. id
  local f, corrupt = fields(jk, 'state')
  if corrupt or f[1] == 'failed' then
    redis.call('DEL', jk, P .. K_DONE .. id)
    redis.call('ZREM', KEYS[3], id)
    n = n + 1
  end
end
return n
