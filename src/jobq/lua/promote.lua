-- promote: move scheduled jobs whose time has come (eta, retry back-off) into their queues.
-- KEYS: 1 events, 2 scheduled zset, 3 seq counter
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, dead
-- ARGV: 4 max jobs to promote in this call
-- Returns: number of jobs promoted.
local ids = redis.call('ZRANGE', KEYS[2], '-inf', NOW, 'BYSCORE', 'LIMIT', 0,
  math.floor(num(ARGV[4], 'limit')))
local moved = 0
bulk('ZREM', KEYS[2], nil, ids) -- (every one read leaves the scheduled set)
for _, id in ipairs(ids) do
  local jk = P .. K_JOB .. id
  local f = fields(jk, 'state', 'queue', 'pri', 'rslot')
  if f[1] == 'scheduled' then
    redis.call('HSET', jk, 'state', 'queued')
    -- A rate-limited job whose reserved start slot has come goes first within its priority
    -- (seq 0): behind a backlog it would start late, and many such jobs at once (a burst).
    push_queue(id, f[2], f[3], KEYS[3], false, f[4] and 0 or nil)
    stat(f[2], 'scheduled', -1)
    emit(id, 'queued', f[2])
    moved = moved + 1
  end
end
return done(moved)
