-- declare: publish the tasks a worker runs with the settings they declare (the task catalog
-- that by-name submits read, registry.py), and mark each one seen now by a live worker that
-- knows it. A worker calls it when it starts and again every heartbeat interval while alive.
-- KEYS: 1 events, 2 tasks hash (name -> declared settings, JSON), 3 tasks:seen zset (name ->
--   last seen ms, server clock)
-- Builds: nothing (every key it touches is in KEYS)
-- ARGV: 4 n, then per item 2 fields: task name, settings JSON
-- Returns: number of tasks published.
local n = count(ARGV[4], 4, 2, 'declare')
expect(KEYS[2], 'hash')
expect(KEYS[3], 'zset')
for i = 0, n - 1 do
  local b = 4 + i * 2
  redis.call('HSET', KEYS[2], ARGV[b + 1], ARGV[b + 2])
  redis.call('ZADD', KEYS[3], NOW, ARGV[b + 1])
end
return n
