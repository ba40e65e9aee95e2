-- deliver: apply hand-offs from parents in other partitions to their children here, each
-- exactly once (handoff.py sends each at least once: it deletes an outbox record only after
-- this call, and its WAIT when asked, returned).
-- The parent's outcome is recorded in the child's hash (field x:<parent> = "<state>|<result>"):
-- a repeat finds it and does nothing, and claim passes the result from it. A child waiting on
-- the parent is queued if that was its last pending parent (succeeded), or fails
-- DependencyFailed, with its own dependents here and elsewhere (failed / cancelled). A
-- hand-off for a child not enqueued yet (its parent finished between link and enqueue) is kept
-- in dlv:<child>, which the child's enqueue applies; it expires after the TTL given, in case
-- the child never comes.
-- KEYS: 1 events
-- Builds: job:<id>, dlv:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, seq,
--   children:<id>, xkids:<id>, outbox, unique:<key>, conc:<key>, cwait:<key>, dead
-- ARGV: 4 ttl of a kept hand-off (s), 5 n, then per item 4 fields: child id, parent id, parent
--   state (succeeded, failed or cancelled), result blob ('' unless passed)
-- Returns: array of n codes: 1 = applied, 0 = delivered before (nothing done), 2 = kept for a
--   child not enqueued yet, 3 = ignored (the child does not depend on that parent, or its key
--   is not a job hash).
-- Errors (nothing written): "JOBQ_ARGS ...", "JOBQ_WRONGTYPE ..." (outbox, a dlv key).
local ttl = math.max(1, math.floor(math.min(num(ARGV[4], 'ttl'), MAX_TTL_S)))
local n = count(ARGV[5], 5, 4, 'deliver')
local TERMINAL = {succeeded = true, failed = true, cancelled = true}
expect_outbox()
for i = 0, n - 1 do
  local b = 5 + i * 4
  if not TERMINAL[ARGV[b + 3]] then
    fail_early('JOBQ_ARGS', 'deliver: item ' .. (i + 1) .. ' has parent state ' .. ARGV[b + 3])
  end
  if redis.call('TYPE', P .. K_JOB .. ARGV[b + 1])['ok'] == 'none' then
    expect(P .. K_DLV .. ARGV[b + 1], 'hash')
  end
end
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 4
  local kid, pid, ps, res = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local kjk = P .. K_JOB .. kid
  local t = redis.call('TYPE', kjk)['ok']
  if t == 'none' then
    local dk = P .. K_DLV .. kid
    if redis.call('HSETNX', dk, pid, ps .. '|' .. res) == 1 then
      redis.call('EXPIRE', dk, ttl)
      out[i + 1] = 2
    else
      out[i + 1] = 0
    end
  elseif t ~= 'hash' then
    out[i + 1] = 3
  else
    local f = redis.call('HMGET', kjk, 'state', 'parents', 'waiting', 'x:' .. pid)
    if f[4] then
      out[i + 1] = 0
    elseif not f[2] or not string.find(',' .. f[2] .. ',', ',' .. pid .. ',', 1, true) then
      out[i + 1] = 3
    else
      redis.call('HSET', kjk, 'x:' .. pid, ps .. '|' .. res)
      if f[1] == 'scheduled' and f[3] then
        if ps == 'succeeded' then
          release_dependent(kid)
        else
          fail_dependents({{kid, pid}}, ps)
        end
      end
      out[i + 1] = 1
    end
  end
end
return done(out)
