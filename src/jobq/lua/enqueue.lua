-- enqueue: create N jobs, each queued, scheduled (eta in the future, or waiting on parents), or
-- failed at once (a parent already failed). Idempotent per id; unique keys dedupe pending jobs.
-- KEYS: 1 events, 2 scheduled zset, 3 seq counter, 4 queues set
-- Builds: job:<id>, q:<queue>, wake:<queue>, stats:<queue>, done:<id>, finished, seq,
--   children:<id>, unique:<key>, conc:<key>, cwait:<key>, dead, dlv:<id>, xkids:<id>, outbox
-- ARGV: 4 n, then per job 6 fields: id, task, queue, payload, options, remote parents.
--   Options: '' when every option
--   has its default, else one JSON object of the options that differ (model.JobSpec.as_row),
--   integers: pri (priority), max (attempts), timeout (ms), backoff (ms), ttl (result, s),
--   delay (ms, relative to the server clock so client skew can't shift it), climit
--   (concurrency limit); strings: parents (comma-separated ids), pass ('one' | 'list': hand
--   parents' results to the job), ukey (unique key), ckey (concurrency key), fallback (queue),
--   trace (W3C traceparent, then a newline and the tracestate if any: tracing.py; absent when
--   tracing is off, so the job hash has no `trace` field)
--   Remote parents: '' or those of `parents` that live in other partitions, with what link.lua
--   said of each (handoff.py): per parent "<state>:<id length>:<result length>:<id><result>"
--   (binary-safe, unlike JSON), state pending (a hand-off will come, or came early and waits
--   in dlv:<id>) or terminal (succeeded with its result, failed, cancelled).
-- Returns: array of n: 1 = created, 0 = a job with this id already exists (unchanged),
--          or the id (string) of the pending job holding the same unique key.
--   The same id again for the same task is that job (its args and options are not compared:
--   the id is the idempotency key); for another task it is refused (JOBQ_IDCONFLICT).
-- Errors (nothing written): "JOBQ_PARENT <id>: no such job", "JOBQ_CYCLE <id>",
--   "JOBQ_IDCONFLICT <id>\t<task of the existing job>\t<task submitted>", "JOBQ_ARGS ..."
--   (also "JOBQ_ARGS enqueue: job <id>: ..." for a malformed options record), "JOBQ_WRONGTYPE ..."
--   (a key the batch writes holds another type: the seq counter; the scheduled zset when a
--   job of the batch has a delay; a dlv key of a job with remote parents).
-- A queue key of another type does not fail the batch: its jobs are dead-lettered, saying why
-- (MalformedQueue), as push_queue does (a key that went bad under queued jobs is found so too).
-- The queue registry is a side index: a registry of another type is left as it is.
-- Cost, besides the jobs: one INCRBY of seq, one SADD of the registry, one ZADD and one wake-up
-- per queue (the queue's ZADD gathers its jobs); per job: one HMGET (its id taken?), one HSET,
-- one XADD, and what its options add (a unique key, parents, an eta).
local F = 6
local n = count(ARGV[4], 4, F, 'enqueue')

local remotes = {} -- per job index with remote parents: their table
-- Validate every dependency first, so a bad batch changes nothing. Parents must exist or come
-- earlier in the batch; pointing at a later job of the batch could close a cycle: refused.
-- An id already taken by a job of another task (stored, or earlier in this batch) is refused
-- too: handing back that job's result for this submit would be silently wrong.
local seen, opts, task_of = {}, {}, {}
local later = nil -- the batch's ids: built when a job of it first names parents
local taken = {} -- id -> a job with this id exists (stored, or created earlier in this batch)
local delayed = false
for i = 0, n - 1 do
  local b = 4 + i * F
  local id = ARGV[b + 1]
  local had = task_of[id]
  if not had then
    -- (a job hash always has task and state; a key of another type counts as taken)
    local f, corrupt = fields(P .. K_JOB .. id, 'task', 'state', 'created')
    taken[id] = corrupt or (f[1] or f[2] or f[3]) and true or false
    had = f[1] or nil
  end
  if had and had ~= ARGV[b + 2] then
    return redis.error_reply('JOBQ_IDCONFLICT ' .. id .. '\t' .. had .. '\t' .. ARGV[b + 2])
  end
  task_of[id] = had or ARGV[b + 2]
  opts[i + 1] = enqueue_options(id, ARGV[b + 5])
  local parents = opts[i + 1].parents or ''
  local remote = nil
  if ARGV[b + 6] ~= '' then
    remote = enqueue_remote_parents(ARGV[b + 6], id, parents)
    remotes[i] = remote
    expect(P .. K_DLV .. id, 'hash')
  end
  if (tonumber(opts[i + 1].delay) or 0) > 0 then delayed = true end
  if parents ~= '' then
    if not later then
      later = {}
      for k = 0, n - 1 do later[ARGV[4 + k * F + 1]] = true end
    end
    for pid in string.gmatch(parents, '[^,]+') do
      if pid == id then return redis.error_reply('JOBQ_CYCLE ' .. id .. ' depends on itself') end
      if later[pid] and not seen[pid] then
        return redis.error_reply('JOBQ_CYCLE ' .. id .. ' depends on ' .. pid ..
          ', submitted after it in the same batch (parents must come first)')
      end
      if not seen[pid] and not (remote and remote[pid]) then
        local t = redis.call('TYPE', P .. K_JOB .. pid)['ok']
        if t == 'none' then
          return redis.error_reply('JOBQ_PARENT ' .. pid .. ': no such job (parent of ' .. id .. ')')
        elseif t ~= 'hash' then
          return redis.error_reply('JOBQ_PARENT ' .. pid .. ': its key holds a ' .. t ..
            ', not a job (parent of ' .. id .. ')')
        end
      end
    end
  end
  seen[id] = true
end

if delayed then expect(KEYS[2], 'zset') end
local seq = n > 0 and take_numbers(KEYS[3], n) or 0 -- the first write: FIFO numbers, one INCRBY
local out = {}
local registry, registered = {}, {} -- the queues the batch touched
local pushes, order = {}, {} -- per queue queued to: its jobs' score, id pairs
for i = 0, n - 1 do
  local b = 4 + i * F
  local id, task, queue, payload = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local o = opts[i + 1] -- ('' below = the option's default, as an absent one)
  if o == DEFAULTS then
    -- Every option at its default (the common case): no unique key, delay or parents (nor
    -- remote ones, which name parents), so the job is queued now with its five fields; the
    -- same writes as the general path below, without reading each option.
    if taken[id] then
      out[i + 1] = 0
    else
      taken[id] = true
      append_pair(pushes, order, queue, seq + i + 1, id)
      redis.call('HSET', P .. K_JOB .. id, 'task', task, 'queue', queue, 'payload', payload,
        'state', 'queued', 'created', NOW)
      emit(id, 'queued', queue)
      if not registered[queue] then
        registered[queue] = true
        registry[#registry + 1] = queue
      end
      out[i + 1] = 1
    end
  else
    local pri, maxa, tmo, bo, ttl = o.pri or '', o.max or '', o.timeout or '', o.backoff or '',
      o.ttl or ''
    local eta = NOW + (tonumber(o.delay) or 0)
    local parents, pass, ukey = o.parents or '', o.pass or '', o.ukey or ''
    local ckey, climit, fallback = o.ckey or '', o.climit or '1', o.fallback or ''
    local jk = P .. K_JOB .. id
    local holder = nil
    if ukey ~= '' then
      holder = try('GET', P .. K_UNIQUE .. ukey)
      if holder and redis.call('EXISTS', P .. K_JOB .. holder) == 0 then holder = nil end
    end
    if holder then
      out[i + 1] = holder
    elseif taken[id] then
      out[i + 1] = 0
    else
      taken[id] = true
      local state = 'queued'
      if eta > NOW then state = 'scheduled' end
      -- The job's fields, written in one HSET once its state is known (its parents decide).
      -- (Appended as `h[#h + 1], h[#h + 2] = field, value`: both indexes are taken before either
      -- is assigned, and no closure is made per job.)
      local h = {'task', task, 'queue', queue, 'payload', payload, 'state', state, 'created', NOW}
      if pri ~= '' and pri ~= '0' then h[#h + 1], h[#h + 2] = 'pri', pri end
      if maxa ~= '' and maxa ~= '1' then h[#h + 1], h[#h + 2] = 'max', maxa end
      if tmo ~= '' then h[#h + 1], h[#h + 2] = 'timeout', tmo end
      if bo ~= '' then h[#h + 1], h[#h + 2] = 'backoff', bo end
      if ttl ~= '' then h[#h + 1], h[#h + 2] = 'ttl', ttl end
      if ukey ~= '' then
        redis.call('SET', P .. K_UNIQUE .. ukey, id)
        h[#h + 1], h[#h + 2] = 'ukey', ukey
      end
      if ckey ~= '' then
        h[#h + 1], h[#h + 2] = 'ckey', ckey
        h[#h + 1], h[#h + 2] = 'climit', climit
      end
      if fallback ~= '' then h[#h + 1], h[#h + 2] = 'fallback', fallback end
      if o.trace and o.trace ~= '' then h[#h + 1], h[#h + 2] = 'trace', o.trace end
      local waiting, failed_parent, parent_state = 0, nil, nil
      if parents ~= '' then
        h[#h + 1], h[#h + 2] = 'parents', parents
        if pass ~= '' then h[#h + 1], h[#h + 2] = 'pass', pass end
        local remote, dk, applied = remotes[i], P .. K_DLV .. id, {}
        for pid in string.gmatch(parents, '[^,]+') do
          local pjk = P .. K_JOB .. pid
          local ps = nil
          if not (remote and remote[pid]) then ps = try('HGET', pjk, 'state') end
          if remote and remote[pid] then
            -- In another partition: a hand-off that came before this job did wins over what
            -- link said (it is newer); a parent named twice counts once.
            if not applied[pid] then
              applied[pid] = true
              local st, res = remote[pid][1], remote[pid][2]
              local early = redis.call('HGET', dk, pid)
              if early then
                local bar = string.find(early, '|', 1, true) or #early + 1
                st, res = string.sub(early, 1, bar - 1), string.sub(early, bar + 1)
              end
              if st == 'pending' then
                waiting = waiting + 1
              else
                h[#h + 1], h[#h + 2] = 'x:' .. pid, st .. '|' .. res
                if st ~= 'succeeded' then
                  failed_parent, parent_state = failed_parent or pid, parent_state or st
                end
              end
            end
          elseif ps == 'failed' or ps == 'cancelled' then
            failed_parent, parent_state = failed_parent or pid, parent_state or ps
          elseif ps ~= 'succeeded' and try('SADD', P .. K_CHILDREN .. pid, id) == 1 then
            -- (a parent named twice counts once, or the child would wait forever)
            redis.call('HSET', pjk, 'kids', 1)
            waiting = waiting + 1
          end
        end
        if remote then
          redis.call('DEL', dk)
          h[#h + 1], h[#h + 2] = 'xp', 1
        end
      end
      if failed_parent then
        -- (a new job: no waiters, no dependents yet; this emits its event)
        redis.call('HSET', jk, unpack(h))
        dead_letter(id, jk, queue, job_error('DependencyFailed', 'parent job ' .. failed_parent ..
          ' ' .. parent_state), nil, nil, ukey ~= '' and ukey or nil, nil, nil)
      else
        if waiting > 0 then
          state = 'scheduled'
          h[8] = state
          h[#h + 1], h[#h + 2] = 'waiting', waiting
          stat(queue, 'scheduled', 1)
        elseif state == 'scheduled' then
          h[#h + 1], h[#h + 2] = 'eta', eta
          redis.call('ZADD', KEYS[2], eta, id)
          stat(queue, 'scheduled', 1)
        else
          append_pair(pushes, order, queue, -(tonumber(pri) or 0) * PRI_SPAN + seq + i + 1, id)
        end
        redis.call('HSET', jk, unpack(h))
        emit(id, state, queue)
      end
      if not registered[queue] then
        registered[queue] = true
        registry[#registry + 1] = queue
      end
      out[i + 1] = 1
    end
  end
end
-- Each queue's jobs in one ZADD; a queue key of another type dead-letters them (push_queue).
for _, queue in ipairs(order) do
  local q, qk = pushes[queue], P .. K_QUEUE .. queue
  local ok = true
  local i = 1
  while ok and i <= #q do
    local j = math.min(i + CHUNK - 1, #q)
    ok = try('ZADD', qk, unpack(q, i, j)) ~= nil
    i = j + 1
  end
  if ok then
    wake(queue)
  else
    for k = 2, #q, 2 do
      local id = q[k]
      mark_dead(id, P .. K_JOB .. id, job_error('MalformedQueue', 'key ' .. qk ..
        ' is not a sorted set, so job ' .. id .. ' could not be queued'))
      emit(id, 'failed', queue, 'malformed queue')
    end
  end
end
if #registry > 0 then bulk('SADD', KEYS[4], nil, registry, true) end
return done(out)
