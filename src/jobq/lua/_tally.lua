-- The second part of the library's shared code: scripts.py loads it after _preamble.lua (whose
-- helpers it uses) and before the scripts, so these helpers too are made once when the library
-- loads. Only the outcome scripts and claim call them.
-- Per-task figures (histograms.py has the reader and the field encoding): in the hash
-- tstats:<queue>, field "<kind>|<task>": s / f / r / c = succeeded / failed / retried /
-- cancelled attempts, t<i> / w<i> = runtime / queue-wait samples in bucket i (0-based, bounds
-- below = histograms.BOUNDS_MS, a sample goes into the first bound >= it, the last bucket is
-- open), ts / ws = their sums (ms). Summed over the call like stat() and written by tflush(),
-- which the outcome and claim scripts call before done(): one HINCRBY per queue and field a
-- call touched, so a batch of one task costs a handful whatever its size.
local TBOUNDS = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
  300000, 900000, 3600000}
-- The bucket kinds, made once when the library loads (no string is built per job).
local TKINDS = {t = {}, w = {}}
for i = 0, #TBOUNDS do TKINDS.t[i + 1], TKINDS.w[i + 1] = 't' .. i, 'w' .. i end
local TSUMS = {t = 'ts', w = 'ws'}
-- (by queue, then task, then kind; TSTAT_ORDER: queue, task, kind triples)
local function tstat(queue, task, kind, n)
  local q = TSTATS[queue]
  if not q then
    q = {}
    TSTATS[queue] = q
  end
  local t = q[task]
  if not t then
    t = {}
    q[task] = t
  end
  local v = t[kind]
  if not v then
    v = 0
    local o = #TSTAT_ORDER
    TSTAT_ORDER[o + 1], TSTAT_ORDER[o + 2], TSTAT_ORDER[o + 3] = queue, task, kind
  end
  t[kind] = v + n
end

-- Count one outcome (`kind` s/f/r/c) of `task` in `queue`; a job lacking either is skipped.
local function tcount(queue, task, kind)
  if queue and task then tstat(queue, task, kind, 1) end
end

-- Count one sample of `ms` (runtime kind 't', wait 'w'); a missing, negative or non-finite
-- sample (a corrupt field) is skipped rather than failing the script.
local function tsample(queue, task, kind, ms)
  ms = tonumber(ms)
  if not (queue and task and ms) or ms < 0 or ms ~= ms or ms == math.huge then return end
  local lo, hi = 1, #TBOUNDS + 1 -- binary search: the first bound >= ms (#TBOUNDS + 1: none)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if ms <= TBOUNDS[mid] then hi = mid else lo = mid + 1 end
  end
  tstat(queue, task, TKINDS[kind][lo], 1)
  tstat(queue, task, TSUMS[kind], math.floor(ms))
end

-- Write the per-task figures gathered so far (see tstat).
local function tflush()
  local sk, last = nil, nil
  for i = 1, #TSTAT_ORDER, 3 do
    local queue, task, kind = TSTAT_ORDER[i], TSTAT_ORDER[i + 1], TSTAT_ORDER[i + 2]
    if queue ~= last then sk, last = P .. K_TSTATS .. queue, queue end
    try('HINCRBY', sk, kind .. '|' .. task, TSTATS[queue][task][kind])
  end
  if TSTAT_ORDER[1] then TSTATS, TSTAT_ORDER = {}, {} end
end

-- How long an attempt ran (ms): what the worker measured (`ran` >= 0), else from its
-- `started` field to now; nil when neither is known.
local function runtime_ms(ran, started_at)
  if ran >= 0 then return ran end
  local s = tonumber(started_at)
  if s then return NOW - s end
end
