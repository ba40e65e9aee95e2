-- leader: take or keep the maintenance leader lease.
-- KEYS: 1 events, 2 leader key
-- Builds: nothing (every key it touches is in KEYS)
-- ARGV: 4 candidate id, 5 lease ms, 6 "release" to give it up
-- Returns: 1 = this candidate leads, 0 = another does.
local ms = math.floor(num(ARGV[5], 'lease ms'))
local cur = redis.call('GET', KEYS[2])
if ARGV[6] == 'release' then
  if cur == ARGV[4] then redis.call('DEL', KEYS[2]) end
  return 0
end
if cur == ARGV[4] then
  redis.call('PEXPIRE', KEYS[2], ms)
  return 1
end
if not cur then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ms)
  return 1
end
return 0
