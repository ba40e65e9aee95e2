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
--   parents' results to the job), ukey (unique key), ckey (concurrency key), fallback (queue)
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
--   (a key the batch writes holds another type).
local F = 6
local n = count(ARGV[4], 4, F, 'enqueue')
expect(KEYS[2], 'zset')
expect_counter(KEYS[3])
expect(KEYS[4], 'set')

-- One job's options record, decoded and checked whole (before anything is written): integers
-- come back as digit strings, as the hash stores them, so the rest reads them like ARGV.
local OPTION = {pri = 'int', max = 'int', timeout = 'int', backoff = 'int', ttl = 'int',
  delay = 'int', climit = 'int', parents = 'string', pass = 'string', ukey = 'string',
  ckey = 'string', fallback = 'string'}
local DEFAULTS = {}
local EXACT = 2 ^ 53 -- (integers below this are exact in a Lua number)
local decode, format, typeof = cjson.decode, string.format, type -- (locals: this runs per job)
local function options(id, rec)
  if rec == '' then return DEFAULTS end
  local ok, o = pcall(decode, rec)
  local bad = (not ok or typeof(o) ~= 'table') and 'not a JSON object'
  if not bad then
    for k, v in pairs(o) do
      local want = OPTION[k]
      if want == 'int' then
        -- (v % 1 is 0 for a whole number only: not for a fraction, an infinity or a NaN)
        if typeof(v) ~= 'number' or v % 1 ~= 0 or v >= EXACT or v <= -EXACT then
          bad = 'option ' .. k .. ' is not an integer'
          break
        end
        o[k] = format('%d', v) -- (assigning an existing key is allowed during pairs)
      elseif want ~= typeof(v) then
        bad = want and ('option ' .. k .. ' is not a ' .. want) or
          ('unknown option ' .. tostring(k))
        break
      end
    end
  end
  if bad then
    fail_early('JOBQ_ARGS', 'enqueue: job ' .. id .. ': options record ' .. string.sub(rec, 1, 80) ..
      ': ' .. bad)
  end
  return o
end

local LINKED = {pending = true, succeeded = true, failed = true, cancelled = true}
-- Decode the remote parents field of job `id` (see above): {parent id -> {state, result}}.
local function remote_parents(s, id, parents)
  local out, i = {}, 1
  while i <= #s do
    local st, li, lr, j = string.match(s, '^(%l+):(%d+):(%d+):()', i)
    li, lr = tonumber(li), tonumber(lr)
    if not st or not LINKED[st] or li == 0 or j + li + lr - 1 > #s then
      fail_early('JOBQ_ARGS', 'enqueue: remote parents of ' .. id .. ' malformed at byte ' .. i)
    end
    local pid = string.sub(s, j, j + li - 1)
    if not string.find(',' .. parents .. ',', ',' .. pid .. ',', 1, true) then
      fail_early('JOBQ_ARGS', 'enqueue: remote parent ' .. pid .. ' is not a parent of ' .. id)
    end
    out[pid] = {st, string.sub(s, j + li, j + li + lr - 1)}
    i = j + li + lr
  end
  return out
end
local remotes = {} -- per job index with remote parents: their table
-- Validate every dependency first, so a bad batch changes nothing. Parents must exist or come
-- earlier in the batch; pointing at a later job of the batch could close a cycle: refused.
-- An id already taken by a job of another task (stored, or earlier in this batch) is refused
-- too: handing back that job's result for this submit would be silently wrong.
local seen, later, checked, opts, task_of = {}, {}, {}, {}, {}
for i = 0, n - 1 do later[ARGV[4 + i * F + 1]] = true end
for i = 0, n - 1 do
  local b = 4 + i * F
  local id = ARGV[b + 1]
  local had = task_of[id] or try('HGET', P .. K_JOB .. id, 'task')
  if had and had ~= ARGV[b + 2] then
    return redis.error_reply('JOBQ_IDCONFLICT ' .. id .. '\t' .. had .. '\t' .. ARGV[b + 2])
  end
  task_of[id] = had or ARGV[b + 2]
  opts[i + 1] = options(id, ARGV[b + 5])
  local parents = opts[i + 1].parents or ''
  local remote = {}
  if ARGV[b + 6] ~= '' then
    remote = remote_parents(ARGV[b + 6], id, parents)
    remotes[i] = remote
    expect(P .. K_DLV .. id, 'hash')
  end
  if not checked[ARGV[b + 3]] then -- (once per queue of the batch, not once per job)
    expect(P .. K_QUEUE .. ARGV[b + 3], 'zset')
    checked[ARGV[b + 3]] = true
  end
  if parents ~= '' then
    for pid in string.gmatch(parents, '[^,]+') do
      if pid == id then return redis.error_reply('JOBQ_CYCLE ' .. id .. ' depends on itself') end
      if later[pid] and not seen[pid] then
        return redis.error_reply('JOBQ_CYCLE ' .. id .. ' depends on ' .. pid ..
          ', submitted after it in the same batch (parents must come first)')
      end
      if not seen[pid] and not remote[pid] then
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

local out = {}
local touched, queued = {}, {} -- per queue, once per call: registry entry, wake-up
local seq = redis.call('INCRBY', KEYS[3], n) - n -- FIFO numbers for the whole batch at once
for i = 0, n - 1 do
  local b = 4 + i * F
  local id, task, queue, payload = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local o = opts[i + 1] -- ('' below = the option's default, as an absent one)
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
  elseif redis.call('EXISTS', jk) == 1 then
    out[i + 1] = 0
  else
    local state = 'queued'
    if eta > NOW then state = 'scheduled' end
    redis.call('HSET', jk, 'task', task, 'queue', queue, 'payload', payload, 'state', state,
      'created', NOW)
    if pri ~= '' and pri ~= '0' then redis.call('HSET', jk, 'pri', pri) end
    if maxa ~= '' and maxa ~= '1' then redis.call('HSET', jk, 'max', maxa) end
    if tmo ~= '' then redis.call('HSET', jk, 'timeout', tmo) end
    if bo ~= '' then redis.call('HSET', jk, 'backoff', bo) end
    if ttl ~= '' then redis.call('HSET', jk, 'ttl', ttl) end
    if ukey ~= '' then
      redis.call('SET', P .. K_UNIQUE .. ukey, id)
      redis.call('HSET', jk, 'ukey', ukey)
    end
    if ckey ~= '' then redis.call('HSET', jk, 'ckey', ckey, 'climit', climit) end
    if fallback ~= '' then redis.call('HSET', jk, 'fallback', fallback) end
    local waiting, failed_parent, parent_state = 0, nil, nil
    if parents ~= '' then
      redis.call('HSET', jk, 'parents', parents)
      if pass ~= '' then redis.call('HSET', jk, 'pass', pass) end
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
              redis.call('HSET', jk, 'x:' .. pid, st .. '|' .. res)
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
        redis.call('HSET', jk, 'xp', 1)
      end
    end
    if failed_parent then -- (a new job: no waiters, no dependents yet; this emits its event)
      dead_letter(id, jk, queue, job_error('DependencyFailed', 'parent job ' .. failed_parent ..
        ' ' .. parent_state), nil, nil, ukey ~= '' and ukey or nil, nil, nil)
    elseif waiting > 0 then
      state = 'scheduled'
      redis.call('HSET', jk, 'state', state, 'waiting', waiting)
      stat(queue, 'scheduled', 1)
    elseif state == 'scheduled' then
      redis.call('HSET', jk, 'eta', eta)
      redis.call('ZADD', KEYS[2], eta, id)
      stat(queue, 'scheduled', 1)
    else
      push_queue(id, queue, pri, KEYS[3], true, seq + i + 1)
      queued[queue] = true
    end
    touched[queue] = true
    if not failed_parent then emit(id, state, queue) end
    out[i + 1] = 1
  end
end
for queue in pairs(touched) do redis.call('SADD', KEYS[4], queue) end
for queue in pairs(queued) do wake(queue) end
return out
