"""The Lua scripts: each state change of a task is one atomic script.

Times come from the Redis server's clock (``TIME``), never from a client's, so workers on hosts
whose clocks disagree still agree on due times, dispatch deadlines and lease deadlines. Key
spellings are spliced in from ``keys.py`` (``@READY@`` etc.). Lists kept in the task hash
(``workers``, ``errors``) are JSON arrays appended to as strings, so the scripts never decode
what a task wrote.
"""

from __future__ import annotations

from . import keys

# Shared Lua helpers. `now` is milliseconds on the Redis clock.
_PRELUDE = r"""
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function json_append(list_json, item_json)
  if not list_json or list_json == '' or list_json == '[]' then
    return '[' .. item_json .. ']'
  end
  return string.sub(list_json, 1, -2) .. ',' .. item_json .. ']'
end
local function error_json(class_path, message)
  return cjson.encode({class_path, message})
end
local function finish_failed(key, now, class_path, message, result_ttl)
  local errors = redis.call('HGET', key, 'errors')
  redis.call('HSET', key, 'status', 'FAILED', 'finished_at', now,
             'errors', json_append(errors, error_json(class_path, message)))
  redis.call('HDEL', key, 'owner')
  if result_ttl then redis.call('EXPIRE', key, result_ttl) end
end
-- What is moved aside (dead-lettered ids, corrupt keys) is kept a week for an operator.
local KEEP_ASIDE_MS = 7 * 24 * 3600 * 1000
-- Keys of a wrong type (written by something else) are renamed aside, never fatal: a worker
-- must not stall on garbage. The new names are reported to the caller, which logs them.
local quarantined = {}
local function usable(key, wanted, now)
  local actual = redis.call('TYPE', key)['ok']
  if actual == 'none' or actual == wanted then return true end
  local aside = key .. ':corrupt:' .. now
  redis.call('RENAME', key, aside)
  redis.call('PEXPIRE', aside, KEEP_ASIDE_MS)
  quarantined[#quarantined + 1] = aside
  return false
end
local function is_hash(key)
  return redis.call('TYPE', key)['ok'] == 'hash'
end
local function valid_id(id)
  return #id <= 128 and string.match(id, '^[%w_%-]+$') ~= nil
end
-- Attempts that count against max_attempts: starts, less graceful hand-backs.
local function attempts_of(key)
  local fields = redis.call('HMGET', key, 'workers', 'handbacks')
  local starts = 0
  if fields[1] and fields[1] ~= '[]' then
    local _, commas = string.gsub(fields[1], '","', '')
    starts = commas + 1
  end
  return starts - (tonumber(fields[2]) or 0)
end
local function wake(key)
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, 63)
end
"""

# KEYS: task, ready, deferred, queues, sequence, expiry, wake
# ARGV: prefix, id, queue, priority, run_after_ms|'', ttl_ms|'', maxsize|'', path, args, kwargs,
#       takes_context, backend alias
# Returns {1, now} when queued, {0, waiting} when the backend is full, {-1} on a duplicate id.
ENQUEUE = r"""
local now = clock_ms()
local prefix = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
for i, wanted in ipairs({'zset', 'zset', 'set'}) do usable(KEYS[i + 1], wanted, now) end
usable(KEYS[6], 'zset', now)
usable(KEYS[7], 'list', now)
local maxsize = tonumber(ARGV[7])
if maxsize then
  local waiting = 0
  local queues = redis.call('SMEMBERS', KEYS[4])
  for i = 1, #queues do
    local ready = prefix .. '@READY@' .. queues[i]
    local deferred = prefix .. '@DEFERRED@' .. queues[i]
    if usable(ready, 'zset', now) then waiting = waiting + redis.call('ZCARD', ready) end
    if usable(deferred, 'zset', now) then waiting = waiting + redis.call('ZCARD', deferred) end
  end
  if waiting >= maxsize then return {0, waiting} end
end
local id = ARGV[2]
local priority = tonumber(ARGV[4])
local seq = redis.call('INCR', KEYS[5])
local score = string.format('%.0f', (100 - priority) * 1099511627776 + seq)
redis.call('HSET', KEYS[1], 'path', ARGV[8], 'queue', ARGV[3], 'priority', ARGV[4],
           'score', score, 'args', ARGV[9], 'kwargs', ARGV[10], 'ctx', ARGV[11],
           'backend', ARGV[12], 'status', 'READY', 'enqueued_at', now)
redis.call('SADD', KEYS[4], ARGV[3])
local due = now
local run_after = tonumber(ARGV[5])
if run_after then
  redis.call('HSET', KEYS[1], 'run_after', ARGV[5])
end
if run_after and run_after > now then
  redis.call('ZADD', KEYS[3], run_after, id)
  due = run_after
else
  redis.call('ZADD', KEYS[2], score, id)
end
local ttl = tonumber(ARGV[6])
if ttl then
  redis.call('HSET', KEYS[1], 'expires_at', due + ttl)
  redis.call('ZADD', KEYS[6], due + ttl, id)
end
wake(KEYS[7])
return {1, now}
"""

# KEYS: running, expiry, queues, dead, wake
# ARGV: prefix, worker_id, lease_ms, max_count, max_attempts, result_ttl|'', token_base,
#       queue names... (none: every queue that ever held a task)
# Returns {now, next_due|-1, {quarantined key...}, {id, token, field, value, ...}, ...}
CLAIM = r"""
local now = clock_ms()
local prefix = ARGV[1]
local worker_id = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local max_count = tonumber(ARGV[4])
local max_attempts = tonumber(ARGV[5])
local result_ttl = tonumber(ARGV[6])
local token_base = ARGV[7]
usable(KEYS[1], 'zset', now)
usable(KEYS[2], 'zset', now)
usable(KEYS[3], 'set', now)
usable(KEYS[4], 'zset', now)
usable(KEYS[5], 'list', now)
local queues = {}
for i = 8, #ARGV do queues[#queues + 1] = ARGV[i] end
if #queues == 0 then queues = redis.call('SMEMBERS', KEYS[3]) end
local served = {}
for q = 1, #queues do
  local ready = prefix .. '@READY@' .. queues[q]
  local deferred = prefix .. '@DEFERRED@' .. queues[q]
  usable(ready, 'zset', now)
  usable(deferred, 'zset', now)
  served[q] = {ready, deferred}
end
local function dead(id)
  redis.call('ZADD', KEYS[4], now, id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - KEEP_ASIDE_MS)

-- 1. Waiting tasks past their dispatch deadline (`ttl`) fail and never run.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for i = 1, #expired do
  local id = expired[i]
  local key = prefix .. '@TASK@' .. id
  redis.call('ZREM', KEYS[2], id)
  local queue = valid_id(id) and is_hash(key) and redis.call('HGET', key, 'queue')
  if queue then
    local removed = 0
    for _, name in ipairs({prefix .. '@READY@' .. queue, prefix .. '@DEFERRED@' .. queue}) do
      if usable(name, 'zset', now) then removed = removed + redis.call('ZREM', name, id) end
    end
    if removed > 0 then
      finish_failed(key, now, 'redis_tasks.exceptions.TaskExpired',
        'redis_tasks.exceptions.TaskExpired: not dispatched within the backend ttl', result_ttl)
    end
  end
end

-- 2. Leases past their deadline: the worker is gone. Requeue at the original priority, or
--    fail the task once it has used up its attempts (a poison task).
local lost = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for i = 1, #lost do
  local id = lost[i]
  local key = prefix .. '@TASK@' .. id
  redis.call('ZREM', KEYS[1], id)
  local fields = valid_id(id) and is_hash(key) and redis.call('HMGET', key, 'queue', 'score')
  if not fields or not fields[1] or not tonumber(fields[2]) then
    dead(id)
  else
    local attempts = attempts_of(key)
    local message = 'redis_tasks.exceptions.WorkerLost: the worker running attempt ' .. attempts
      .. ' stopped renewing its lease (killed, crashed, paused or cut off from Redis)'
    if attempts >= max_attempts then
      finish_failed(key, now, 'redis_tasks.exceptions.WorkerLost', message, result_ttl)
    else
      local ready = prefix .. '@READY@' .. fields[1]
      if usable(ready, 'zset', now) then
        local errors = redis.call('HGET', key, 'errors')
        redis.call('HSET', key, 'status', 'READY', 'errors',
          json_append(errors, error_json('redis_tasks.exceptions.WorkerLost', message)))
        redis.call('HDEL', key, 'owner')
        redis.call('ZADD', ready, fields[2], id)
        redis.call('SADD', KEYS[3], fields[1])
        wake(KEYS[5])
      end
    end
  end
end

-- 3. Deferred tasks that are due move to their ready set.
for q = 1, #served do
  local ready, deferred = served[q][1], served[q][2]
  local due = redis.call('ZRANGEBYSCORE', deferred, '-inf', now, 'LIMIT', 0, 1000)
  for i = 1, #due do
    local id = due[i]
    local key = prefix .. '@TASK@' .. id
    local score = valid_id(id) and is_hash(key) and redis.call('HGET', key, 'score')
    redis.call('ZREM', deferred, id)
    if score and tonumber(score) then
      redis.call('ZADD', ready, score, id)
    else
      dead(id)
    end
  end
end

-- 4. Claim the best tasks across the served queues: lowest score = highest priority, then FIFO.
local out = {now, -1, quarantined}
local heads = {}
for q = 1, #served do
  local head = redis.call('ZRANGE', served[q][1], 0, 0, 'WITHSCORES')
  heads[q] = {served[q][1], head[1], tonumber(head[2])}
end
local claimed = 0
while claimed < max_count do
  local best = nil
  for q = 1, #heads do
    local h = heads[q]
    if h[2] and (best == nil or h[3] < heads[best][3]) then best = q end
  end
  if best == nil then break end
  local ready, id = heads[best][1], heads[best][2]
  redis.call('ZREM', ready, id)
  local head = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  heads[best] = {ready, head[1], tonumber(head[2])}
  local key = prefix .. '@TASK@' .. id
  if not valid_id(id) or not is_hash(key) then
    dead(id)
  else
    claimed = claimed + 1
    local token = token_base .. ':' .. claimed
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', key, 'status', 'RUNNING', 'owner', token, 'last_attempted_at', now,
               'workers', json_append(redis.call('HGET', key, 'workers'), cjson.encode(worker_id)))
    redis.call('HSETNX', key, 'started_at', now)
    redis.call('ZADD', KEYS[1], now + lease_ms, id)
    local entry = redis.call('HGETALL', key)
    table.insert(entry, 1, token)
    table.insert(entry, 1, id)
    out[#out + 1] = entry
  end
end

-- A queue left with nothing waiting is forgotten until its next enqueue or requeue, so the set
-- of queues does not grow forever with names no longer used.
for q = 1, #served do
  if redis.call('ZCARD', served[q][1]) == 0 and redis.call('ZCARD', served[q][2]) == 0 then
    redis.call('SREM', KEYS[3], queues[q])
  end
end

if claimed == 0 then
  -- Tokens left by enqueues this claim has now seen would only wake idle workers for nothing;
  -- an enqueue after this script pushes a fresh one, so no wake-up is lost.
  redis.call('DEL', KEYS[5])
  local next_due = -1
  for q = 1, #served do
    local head = redis.call('ZRANGE', served[q][2], 0, 0, 'WITHSCORES')
    if head[2] and (next_due == -1 or tonumber(head[2]) < next_due) then
      next_due = tonumber(head[2])
    end
  end
  out[2] = next_due
end
return out
"""

# KEYS: task, running
# ARGV: id, token, status, return_json|'', error_json|'', result_ttl|''
# Returns finished_at (ms) or 0 when the caller no longer owns the task (a stale finish).
FINISH = r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
local now = clock_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', now)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'return', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'errors', json_append(redis.call('HGET', KEYS[1], 'errors'), ARGV[5]))
end
local result_ttl = tonumber(ARGV[6])
if result_ttl then redis.call('EXPIRE', KEYS[1], result_ttl) end
return now
"""

# KEYS: task, running, expiry, wake, queues
# ARGV: prefix, id, token, delay_ms, error_json|'', handback '1'|'0', ttl_ms|''
# Puts an owned task back in its queue: a retry after `delay_ms` (in the deferred set) with its
# error recorded, or a graceful hand-back (ready at once, not counted as an attempt).
# Returns the time (ms) it is due again, or 0 when the caller no longer owns the task.
REQUEUE = r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[3] then return 0 end
local now = clock_ms()
local prefix, id = ARGV[1], ARGV[2]
local fields = redis.call('HMGET', KEYS[1], 'queue', 'score')
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'status', 'READY')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'errors', json_append(redis.call('HGET', KEYS[1], 'errors'), ARGV[5]))
end
if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[1], 'handbacks', 1) end
local delay = tonumber(ARGV[4])
local due = now + delay
if delay > 0 then
  redis.call('ZADD', prefix .. '@DEFERRED@' .. fields[1], due, id)
else
  redis.call('ZADD', prefix .. '@READY@' .. fields[1], fields[2], id)
end
redis.call('SADD', KEYS[5], fields[1])
local ttl = tonumber(ARGV[7])
if ttl then
  redis.call('HSET', KEYS[1], 'expires_at', due + ttl)
  redis.call('ZADD', KEYS[3], due + ttl, id)
end
wake(KEYS[4])
return due
"""

# KEYS: running
# ARGV: prefix, lease_ms, id, token, id, token, ...
# Extends the leases still owned; returns the ids whose lease was lost.
RENEW = r"""
local now = clock_ms()
local prefix = ARGV[1]
local deadline = now + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = prefix .. '@TASK@' .. id
  if is_hash(key) and redis.call('HGET', key, 'owner') == token then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
"""


def _source(body: str) -> str:
    text = _PRELUDE + body
    for marker, suffix in (
        ("@READY@", keys.READY),
        ("@DEFERRED@", keys.DEFERRED),
        ("@TASK@", keys.TASK),
    ):
        text = text.replace(marker, suffix)
    return text


ENQUEUE_SOURCE = _source(ENQUEUE)
CLAIM_SOURCE = _source(CLAIM)
FINISH_SOURCE = _source(FINISH)
REQUEUE_SOURCE = _source(REQUEUE)
RENEW_SOURCE = _source(RENEW)
