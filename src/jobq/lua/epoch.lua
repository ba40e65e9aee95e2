-- epoch: run on every new connection before anything else. Refuse a node that is not a
-- primary, and move the fencing-token epoch when the primary changed since the last token.
-- KEYS: 1 events, 2 epoch string ("<run id>:<replication id>" of the token issuer), 3 token counter
-- Builds: nothing (every key it touches is in KEYS)
-- ARGV: 4 margin ms (how far past its clock a new primary's first token starts)
-- Returns: {role, moved}: role 1 = a primary, then moved 0 = same epoch, 1 = epoch moved
--          (counter rebased); role 0 = a replica: {0, "<host>:<port>" of its primary},
--          nothing written.
-- Errors: JOBQ_ARGS (margin), JOBQ_WRONGTYPE (epoch or counter key), before any write.

-- Why: tokens are max(previous + 1, NOW * 1024) (see fencing_token). A replica promoted after
-- the old primary died may lack the last claims (replication is asynchronous), so its counter
-- lags; its clock may lag the old primary's too, so NOW * 1024 alone could hand out a token the
-- old primary gave an attempt that is still running. The run id changes on every restart and
-- the replication id on every promotion, so a new "<run id>:<replication id>" means this node
-- may not have seen every token issued: the counter then jumps to (NOW + margin) * 1024, above
-- anything a primary whose clock ran up to `margin` ahead of this one can have issued.
local margin = num(ARGV[4], 'margin ms')
expect(KEYS[2], 'string')
local cur = expect_counter(KEYS[3])
local repl = redis.call('INFO', 'replication')
if string.match(repl, 'role:(%a+)') ~= 'master' then
  local host = string.match(repl, 'master_host:([^\r\n]+)') or '?'
  local port = string.match(repl, 'master_port:(%d+)') or '?'
  return {0, host .. ':' .. port}
end
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '?'
local id = run .. ':' .. (string.match(repl, 'master_replid:(%x+)') or '?')
if redis.call('GET', KEYS[2]) == id then
  return {1, 0}
end
local floor = (NOW + math.floor(margin)) * TOKEN_SCALE
if cur < floor then
  redis.call('SET', KEYS[3], string.format('%d', floor))
end
redis.call('SET', KEYS[2], id)
return {1, 1}
