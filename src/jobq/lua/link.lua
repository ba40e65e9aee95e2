-- link: register children that live in other partitions as dependents of jobs here (the
-- first step of a cross-partition dependency, handoff.py), or tell the child that a parent
-- already finished, so its enqueue applies that at once.
-- A registered child gets one hand-off record in this partition's outbox when its parent
-- settles (settle in the preamble); handoff.py delivers it to the child's partition.
-- KEYS: 1 events
-- Builds: job:<id>, xkids:<id>
-- ARGV: 4 n, then per item 4 fields: parent id, child partition index, child id, pass ('1' =
--   the child takes the parent's result, else '')
-- Returns: array of n {state, result}: state 'pending' (registered: a hand-off follows when the
--   parent settles) or the parent's terminal state, not registered: 'succeeded' (result = its
--   result blob when pass, else ''), 'failed' or 'cancelled' (result '').
-- Errors (nothing written): "JOBQ_PARENT <id>: no such job (parent of <child>)",
--   "JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..." (an xkids key of another type).
local n = count(ARGV[4], 4, 4, 'link')
for i = 0, n - 1 do
  local b = 4 + i * 4
  local pid, part, kid = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  if not string.match(part, '^%d+$') then
    fail_early('JOBQ_ARGS', 'link: partition of item ' .. (i + 1) .. ' must be a whole number, got ' .. part)
  end
  if kid == '' then fail_early('JOBQ_ARGS', 'link: item ' .. (i + 1) .. ' names no child') end
  local t = redis.call('TYPE', P .. K_JOB .. pid)['ok']
  if t == 'none' then
    return redis.error_reply('JOBQ_PARENT ' .. pid .. ': no such job (parent of ' .. kid .. ')')
  elseif t ~= 'hash' then
    return redis.error_reply('JOBQ_PARENT ' .. pid .. ': its key holds a ' .. t ..
      ', not a job (parent of ' .. kid .. ')')
  end
  expect(P .. K_XKIDS .. pid, 'set')
end
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 4
  local pid, part, kid, pass = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4] == '1'
  local pjk = P .. K_JOB .. pid
  local ps = redis.call('HGET', pjk, 'state')
  if ps == 'succeeded' then
    out[i + 1] = {ps, pass and (redis.call('HGET', pjk, 'result') or '') or ''}
  elseif ps == 'failed' or ps == 'cancelled' then
    out[i + 1] = {ps, ''}
  else
    redis.call('SADD', P .. K_XKIDS .. pid, part .. '|' .. (pass and '1' or '0') .. '|' .. kid)
    redis.call('HSET', pjk, 'kids', 1)
    out[i + 1] = {'pending', ''}
  end
end
return out
