"""The Lua scripts: each state change of a task is one atomic script.

Times come from the Redis server's clock (``TIME``), never from a client's, so workers on hosts
whose clocks disagree still agree on due times, dispatch deadlines and lease deadlines. Key
spellings are spliced in from ``keys.py`` (``@READY@`` etc.). Lists kept in the task hash
(``workers``, ``errors``) are JSON arrays appended to as strings, so the scripts never decode
what a task wrote.
"""

from __future__ import annotations

import re

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
-- What is moved aside (dead-lettered ids, corrupt keys) is kept a week for an operator.
local KEEP_ASIDE_MS = 7 * 24 * 3600 * 1000
-- Keys of a wrong type (written by something else) are renamed aside, never fatal: a worker
-- must not stall on garbage. The new names are reported to the caller, which logs them.
local quarantined = {}
local function quarantine(key, now)
  local aside = key .. ':corrupt:' .. (now or clock_ms())
  redis.call('RENAME', key, aside)
  redis.call('PEXPIRE', aside, KEEP_ASIDE_MS)
  quarantined[#quarantined + 1] = aside
end
-- Checks a key's type before a step that must not fail halfway. A key found usable is not
-- checked again in the same script: only this script writes now.
local checked = {}
local function usable(key, wanted, now)
  if checked[key] == wanted then return true end
  local actual = redis.call('TYPE', key)['ok']
  if actual == 'none' or actual == wanted then
    checked[key] = wanted
    return true
  end
  quarantine(key, now)
  return false
end
-- One command on a key, with no TYPE call first: a command refused for the key's type changes
-- nothing, so the key can be moved aside then and the command run again on the free name.
local function repaired(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then quarantine(key) end
    return redis.call(command, key, ...)  -- any other error is raised as it is
  end
  return reply
end
local function release_unique(prefix, key, unique)
  unique = unique or redis.call('HGET', key, 'unique')
  if unique then
    local ukey = prefix .. '@UNIQUE@' .. unique
    if usable(ukey, 'string')
       and redis.call('GET', ukey) == string.sub(key, #prefix + #'@TASK@' + 1) then
      redis.call('DEL', ukey)
    end
  end
end
-- Event counters of the backend instance (for metrics): one hash, never expiring.
local function tally(prefix, event, n)
  repaired('HINCRBY', prefix .. '@STATS@', event, n or 1)
end
-- Finished results are indexed by status and finish time, for listing and purging; entries
-- whose result expired are swept by the claim script.
local function index_done(prefix, key, status, now)
  local index = prefix .. '@DONE@' .. status
  usable(index, 'zset', now)
  redis.call('ZADD', index, now, string.sub(key, #prefix + #'@TASK@' + 1))
end
local function finish_failed(prefix, key, now, class_path, message, result_ttl)
  release_unique(prefix, key)
  local errors = redis.call('HGET', key, 'errors')
  redis.call('HSET', key, 'status', 'FAILED', 'finished_at', now,
             'errors', json_append(errors, error_json(class_path, message)))
  redis.call('HDEL', key, 'owner')
  if result_ttl then redis.call('EXPIRE', key, result_ttl) end
  index_done(prefix, key, 'FAILED', now)
  tally(prefix, 'failed')
end
local function is_hash(key)
  return redis.call('TYPE', key)['ok'] == 'hash'
end
local function valid_id(id)
  return #id <= 128 and string.match(id, '^[%w_%-]+$') ~= nil
end
-- Starts of a task: the worker ids in its JSON array (ids never contain '","').
local function starts_of(key)
  local workers = redis.call('HGET', key, 'workers')
  if not workers or workers == '[]' then return 0 end
  local _, commas = string.gsub(workers, '","', '')
  return commas + 1
end
-- Attempts that count against max_attempts: starts, less hand-backs and operator retries.
local function attempts_of(key)
  return starts_of(key) - (tonumber(redis.call('HGET', key, 'uncounted')) or 0)
end
-- Whether a task really is queued (ready or deferred) or running: its status says so and it
-- sits in the matching set. A unique key held by anything else no longer counts.
local function is_waiting_or_running(prefix, id)
  local key = prefix .. '@TASK@' .. id
  if not is_hash(key) then return false end
  local f = redis.call('HMGET', key, 'status', 'queue')
  if f[1] == 'RUNNING' then
    return redis.call('ZSCORE', prefix .. '@RUNNING@', id) ~= false
  end
  if f[1] ~= 'READY' or not f[2] then return false end
  for _, name in ipairs({prefix .. '@READY@' .. f[2], prefix .. '@DEFERRED@' .. f[2]}) do
    if redis.call('TYPE', name)['ok'] == 'zset' and redis.call('ZSCORE', name, id) then
      return true
    end
  end
  return false
end
-- Tokens pile up while every worker is busy; trimmed back to 64 once past 128, so the trim is
-- paid once every 64 enqueues, not by each.
local function wake(key)
  if repaired('LPUSH', key, '1') > 128 then redis.call('LTRIM', key, 0, 63) end
end
-- The index of queues, so that a claim reads only the best queues, not every one: `heads`
-- scores each queue holding ready tasks with a lower bound of its best ready score, `due` each
-- queue holding deferred tasks with a lower bound of its earliest due time. Whatever adds to a
-- ready or deferred set lowers the bound (ZADD LT); removals leave it low, and the claim that
-- next reads the queue puts the true value back. A bound is never above the truth, so nothing
-- waiting is ever overlooked.
local function index_ready(heads, queue, score) repaired('ZADD', heads, 'LT', score, queue) end
local function index_due(due, queue, at) repaired('ZADD', due, 'LT', at, queue) end
"""

# Shared by ENQUEUE and TICK: queue a batch of tasks, all or none.
# KEYS: queues, sequence, expiry, wake, heads, due (then anything the caller uses)
# ARGV from `at`: maxsize|'', ttl_ms|'', backend alias, count, then per task TASK_FIELDS values:
#   id, queue, priority, run_after_us|'', path, args, kwargs, unique key|'',
#   max_attempts|'' (the task's own, for recovering from lost workers)
# Returns {1, now, existing id|'' per task} when queued (an existing id: a unique task already
# queued or running, returned instead of a new one), {0, waiting} when the backend would pass
# maxsize, {-1, id} when an id is taken.
_ENQUEUE_BATCH = r"""
local TASK_FIELDS = 9
local function enqueue_batch(prefix, at, now)
  local maxsize, ttl = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local backend, count = ARGV[at + 2], tonumber(ARGV[at + 3])
  local first = at + 4
  local existing, claimed_keys, new = {}, {}, 0
  for t = 0, count - 1 do
    local f = first + t * TASK_FIELDS
    local id, unique = ARGV[f], ARGV[f + 7]
    if redis.call('EXISTS', prefix .. '@TASK@' .. id) == 1 then return {-1, id} end
    existing[t + 1] = ''
    if unique ~= '' then
      local holder = claimed_keys[unique]
      if not holder then
        local ukey = prefix .. '@UNIQUE@' .. unique
        local current = redis.call('TYPE', ukey)['ok'] == 'string' and redis.call('GET', ukey)
        if current and is_waiting_or_running(prefix, current) then holder = current end
      end
      if holder then existing[t + 1] = holder else claimed_keys[unique] = id end
    end
    if existing[t + 1] == '' then new = new + 1 end
  end
  if maxsize and new > 0 then
    local waiting = 0
    local queues = repaired('SMEMBERS', KEYS[1])
    for i = 1, #queues do
      waiting = waiting + repaired('ZCARD', prefix .. '@READY@' .. queues[i])
        + repaired('ZCARD', prefix .. '@DEFERRED@' .. queues[i])
    end
    if waiting + new > maxsize then return {0, waiting} end
  end
  -- From here on every step succeeds (a key of a wrong type is moved aside, never an error),
  -- so the batch is queued whole.
  -- Numbers are turned into text here, once each: a number handed to redis.call is formatted
  -- with '%.17g' by Redis, which costs as much as a small command.
  local now_text = string.format('%d', now)
  local added, best_ready, best_text, first_due, due_text = {}, {}, {}, {}, {}
  local function field(fields, name, value)
    fields[#fields + 1], fields[#fields + 2] = name, value
  end
  -- One sequence number per new task, all taken in one step: seq + 1 .. seq + new.
  local seq = 0
  if new > 0 then
    seq = redis.pcall('INCRBY', KEYS[2], new)
    if type(seq) ~= 'number' then  -- not a counter: move it aside, restart FIFO numbering
      quarantine(KEYS[2], now)
      seq = redis.call('INCRBY', KEYS[2], new)
    end
    seq = seq - new
  end
  for t = 0, count - 1 do
    if existing[t + 1] == '' then
      local f = first + t * TASK_FIELDS
      local id, queue, priority = ARGV[f], ARGV[f + 1], tonumber(ARGV[f + 2])
      local key = prefix .. '@TASK@' .. id
      seq = seq + 1
      local score = (100 - priority) * 1099511627776 + seq
      local score_text = string.format('%d', score)
      -- run_after is given in microseconds (stored as given); it is due at its millisecond.
      local run_after_us = tonumber(ARGV[f + 3])
      local run_after = run_after_us and math.floor(run_after_us / 1000)
      local due = (run_after and run_after > now) and run_after or now
      local fields = {'path', ARGV[f + 4], 'queue', queue, 'priority', ARGV[f + 2],
                      'score', score_text, 'args', ARGV[f + 5], 'kwargs', ARGV[f + 6],
                      'backend', backend, 'status', 'READY',
                      'enqueued_at', now_text}
      if ARGV[f + 8] ~= '' then field(fields, 'max_attempts', ARGV[f + 8]) end
      if ARGV[f + 7] ~= '' then
        field(fields, 'unique', ARGV[f + 7])
        redis.call('SET', prefix .. '@UNIQUE@' .. ARGV[f + 7], id)
      end
      if run_after then field(fields, 'run_after', ARGV[f + 3]) end
      local expires_at = ttl and string.format('%d', due + ttl)
      if expires_at then field(fields, 'expires_at', expires_at) end
      redis.call('HSET', key, unpack(fields))
      if not added[queue] then
        repaired('SADD', KEYS[1], queue)
        added[queue] = true
      end
      if due > now then
        local due_at = string.format('%d', run_after)
        repaired('ZADD', prefix .. '@DEFERRED@' .. queue, due_at, id)
        if not first_due[queue] or run_after < first_due[queue] then
          first_due[queue], due_text[queue] = run_after, due_at
        end
      else
        repaired('ZADD', prefix .. '@READY@' .. queue, score_text, id)
        if not best_ready[queue] or score < best_ready[queue] then
          best_ready[queue], best_text[queue] = score, score_text
        end
      end
      if expires_at then repaired('ZADD', KEYS[3], expires_at, id) end
    end
  end
  for queue, text in pairs(best_text) do index_ready(KEYS[5], queue, text) end
  for queue, text in pairs(due_text) do index_due(KEYS[6], queue, text) end
  if new > 0 then
    wake(KEYS[4])
    tally(prefix, 'enqueued', new)
  end
  local out = {1, now}
  for t = 1, count do out[#out + 1] = existing[t] end
  return out
end
"""

# KEYS: queues, sequence, expiry, wake, heads, due
# ARGV: prefix, then the batch (see _ENQUEUE_BATCH) from ARGV[2].
ENQUEUE = r"""
return enqueue_batch(ARGV[1], 2, clock_ms())
"""

# KEYS: queues, sequence, expiry, wake, heads, due, schedule
# ARGV: prefix, tick_ms, mode ('enqueue' | 'skip'), then the batch of one task from ARGV[4].
# A periodic tick: enqueued once however many workers call this for it, because the tick is
# compared and recorded in the same script that enqueues. Returns the batch reply, or
# {2} when this tick (or a later one) was already handled, {3} when it was skipped.
TICK = r"""
local now = clock_ms()
local tick = tonumber(ARGV[2])
usable(KEYS[7], 'hash', now)
local last = tonumber(redis.call('HGET', KEYS[7], 'last'))
if last and last >= tick then return {2} end
if ARGV[3] == 'skip' then
  redis.call('HSET', KEYS[7], 'last', tick)
  return {3}
end
local reply = enqueue_batch(ARGV[1], 4, now)
if reply[1] == 1 then
  redis.call('HSET', KEYS[7], 'last', tick, 'last_enqueued_at', now)
  if reply[3] == '' then  -- a new task, not a unique one already queued
    redis.call('HSET', ARGV[1] .. '@TASK@' .. ARGV[8], 'tick', tick)
  end
end
return reply
"""

# KEYS: running, expiry, queues, dead, wake, workers, heads, due, swept, reconciled
# ARGV: prefix, worker_id, lease_ms, max_count, max_attempts, result_ttl|'', token_base,
#       sweep_ms, reconcile_ms, thorough ('1': both now), queue names... (none: every queue)
# Returns {now, next_due|-1, {quarantined key...}, {value of each CLAIM_FIELDS..., id, token}, ...}
# (next_due: the earliest deferred task's due time, when fewer tasks than asked were claimed)
#
# What a claim costs does not grow with the number of queues: the index (`heads`, `due`) names
# the queues worth reading. The sweeps (dispatch deadlines, lost leases, old index entries of
# finished results and dead workers) run at most once per `sweep_ms` across all workers, and the
# check of the index against `queues` once per `reconcile_ms`.
CLAIM = r"""
local now = clock_ms()
local prefix = ARGV[1]
local worker_id = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local max_count = tonumber(ARGV[4])
local max_attempts = tonumber(ARGV[5])
local result_ttl = tonumber(ARGV[6])
local token_base = ARGV[7]
local HEADS, DUE = KEYS[7], KEYS[8]
-- Numbers written many times, turned into text once.
local now_text, deadline_text = string.format('%d', now), string.format('%d', now + lease_ms)
local worker_json = cjson.encode(worker_id)
local CLAIM_FIELDS = @CLAIM_FIELDS@
local F = {}
for i, name in ipairs(CLAIM_FIELDS) do F[name] = i end
local function dead(id)
  repaired('ZADD', KEYS[4], now, id)
end
local function ready_of(queue) return prefix .. '@READY@' .. queue end
local function deferred_of(queue) return prefix .. '@DEFERRED@' .. queue end
-- Gates open at most once per period across every worker: each key holds the time its gate
-- opens again (and expires then by itself). Both are read in one call.
local thorough = ARGV[10] == '1'
local gates = redis.call('MGET', KEYS[9], KEYS[10])
local function gate_open(at, key, period_ms)
  if not thorough and (tonumber(gates[at]) or now) > now then return false end
  redis.call('SET', key, now + period_ms, 'PX', period_ms)
  return true
end
-- A queue with neither ready nor deferred tasks is forgotten until its next enqueue or
-- requeue, so `queues` does not grow for ever with names no longer used.
local function forget_if_empty(queue)
  if repaired('ZCARD', ready_of(queue)) == 0 and repaired('ZCARD', deferred_of(queue)) == 0 then
    repaired('SREM', KEYS[3], queue)
    return true
  end
  return false
end
local function expire_waiting(id, key)
  tally(prefix, 'expired')
  finish_failed(prefix, key, now, 'redis_tasks.exceptions.TaskExpired',
    'redis_tasks.exceptions.TaskExpired: not dispatched within the backend ttl', result_ttl)
end

-- Sweeps, once per period across all workers.
local function sweep()
  repaired('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - KEEP_ASIDE_MS)
  repaired('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)  -- workers that stopped heartbeating
  if result_ttl then
    for _, status in ipairs({'SUCCESSFUL', 'FAILED'}) do
      repaired('ZREMRANGEBYSCORE', prefix .. '@DONE@' .. status, '-inf', now - result_ttl * 1000)
    end
  end
  -- 1. Waiting tasks past their dispatch deadline (`ttl`) fail and never run.
  local expired = repaired('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 500)
  for i = 1, #expired do
    local id = expired[i]
    local key = prefix .. '@TASK@' .. id
    redis.call('ZREM', KEYS[2], id)
    local queue = valid_id(id) and is_hash(key) and redis.call('HGET', key, 'queue')
    if queue then
      local removed = repaired('ZREM', ready_of(queue), id)
        + repaired('ZREM', deferred_of(queue), id)
      if removed > 0 then expire_waiting(id, key) end
    end
  end
  -- 2. Leases past their deadline: the worker is gone. Requeue at the original priority, or
  --    fail the task once it has used up its attempts (a poison task).
  local lost = repaired('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
  for i = 1, #lost do
    local id = lost[i]
    local key = prefix .. '@TASK@' .. id
    redis.call('ZREM', KEYS[1], id)
    local fields = valid_id(id) and is_hash(key)
      and redis.call('HMGET', key, 'queue', 'score', 'max_attempts')
    if not fields or not fields[1] or not tonumber(fields[2]) then
      dead(id)
    else
      tally(prefix, 'lost')
      local attempts = attempts_of(key)
      local message = 'redis_tasks.exceptions.WorkerLost: the worker running attempt ' .. attempts
        .. ' stopped renewing its lease (killed, crashed, paused or cut off from Redis)'
      if attempts >= (tonumber(fields[3]) or max_attempts) then
        finish_failed(prefix, key, now, 'redis_tasks.exceptions.WorkerLost', message, result_ttl)
      else
        local errors = redis.call('HGET', key, 'errors')
        redis.call('HSET', key, 'status', 'READY', 'errors',
          json_append(errors, error_json('redis_tasks.exceptions.WorkerLost', message)))
        redis.call('HDEL', key, 'owner')
        repaired('ZADD', ready_of(fields[1]), fields[2], id)
        repaired('SADD', KEYS[3], fields[1])
        index_ready(HEADS, fields[1], tonumber(fields[2]))
        wake(KEYS[5])
      end
    end
  end
end

-- The index checked against `queues`: a queue written without it (by an older version, by
-- hand) is found, and a queue left empty is forgotten.
local function reconcile()
  local names = repaired('SMEMBERS', KEYS[3])
  for i = 1, #names do
    local queue = names[i]
    local r = repaired('ZRANGE', ready_of(queue), 0, 0, 'WITHSCORES')
    local d = repaired('ZRANGE', deferred_of(queue), 0, 0, 'WITHSCORES')
    if r[2] then index_ready(HEADS, queue, tonumber(r[2])) end
    if d[2] then index_due(DUE, queue, tonumber(d[2])) end
    if not r[2] and not d[2] then repaired('SREM', KEYS[3], queue) end
  end
end

if gate_open(1, KEYS[9], tonumber(ARGV[8])) then sweep() end
if gate_open(2, KEYS[10], tonumber(ARGV[9])) then reconcile() end

-- The queues served: named ones, or (none named) every queue in the index.
local named = {}
for i = 11, #ARGV do named[#named + 1] = ARGV[i] end
local function scores_of(index)  -- {queue, bound} of the named queues in the index
  local found = {}
  for first = 1, #named, 1000 do  -- unpack stays far below Lua's stack limit
    local last = math.min(first + 999, #named)
    local scores = repaired('ZMSCORE', index, unpack(named, first, last))
    for i = 1, #scores do
      if scores[i] then found[#found + 1] = {named[first + i - 1], tonumber(scores[i])} end
    end
  end
  table.sort(found, function(a, b) return a[2] < b[2] end)
  return found
end

-- 3. Deferred tasks that are due move to the front of their priority in the ready set, so a
--    backlog of tasks queued before them does not make them late; among themselves they keep
--    the order of their due times. Their scores lie in the lower half of the priority's band,
--    below every sequence number (< 2^39) of tasks queued normally.
-- The earliest due time read here is reused at the end when no deferred task moved (only
-- this step changes `due`).
local due_queues, first_due = {}, nil
if #named > 0 then
  local entries = scores_of(DUE)
  for _, entry in ipairs(entries) do
    if entry[2] <= now then due_queues[#due_queues + 1] = entry[1] end
  end
  first_due = entries[1] and entries[1][2]
else
  first_due = tonumber(repaired('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2])
  if first_due and first_due <= now then
    due_queues = repaired('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, 1000)
  end
end
for q = 1, #due_queues do
  local queue = due_queues[q]
  local ready, deferred = ready_of(queue), deferred_of(queue)
  local due = repaired('ZRANGEBYSCORE', deferred, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
  local best = nil
  for i = 1, #due, 2 do
    local id, due_at = due[i], tonumber(due[i + 1])
    local key = prefix .. '@TASK@' .. id
    local priority = valid_id(id) and is_hash(key) and tonumber(redis.call('HGET', key, 'priority'))
    redis.call('ZREM', deferred, id)
    if priority then
      local band = (100 - priority) * 1099511627776 - 549755813888
      local score = band + (due_at % 274877906944)
      repaired('ZADD', ready, score, id)
      if not best or score < best then best = score end
    else
      dead(id)
    end
  end
  if best then index_ready(HEADS, queue, best) end
  local next_one = redis.call('ZRANGE', deferred, 0, 0, 'WITHSCORES')
  if next_one[2] then
    redis.call('ZADD', DUE, next_one[2], queue)
  else
    redis.call('ZREM', DUE, queue)
    forget_if_empty(queue)
  end
end

-- 4. Claim the best tasks across the served queues: lowest score = highest priority, then FIFO.
--    Queues are read in the order of their index bounds, and reading stops once the tasks in
--    hand beat the next queue's bound: a claim reads about as many queues as it takes tasks.
--    What is taken leaves its ready set in one ZREM per queue and enters the lease set in one
--    ZADD; the index entries of the queues read are then set to their true heads.
local out = {now, -1, quarantined}
local claimed = 0
local function claim_round()
  local need = max_count - claimed
  local order, page_from, exhausted = {}, 0, false
  if #named > 0 then order, exhausted = scores_of(HEADS), true end
  local at = 0
  local function next_queue()
    at = at + 1
    if order[at] == nil and not exhausted then
      local page = repaired('ZRANGE', HEADS, page_from, page_from + need + 7, 'WITHSCORES')
      page_from = page_from + need + 8
      exhausted = #page < 2 * (need + 8)
      for i = 1, #page, 2 do order[#order + 1] = {page[i], tonumber(page[i + 1])} end
    end
    return order[at]
  end
  local cand, heads_read, read_order = {}, {}, {}
  while true do
    local entry = next_queue()
    if entry == nil or (#cand >= need and cand[need][1] <= entry[2]) then break end
    local queue = entry[1]
    if not heads_read[queue] then
      -- One more than can be taken: the first left behind is the queue's new head.
      local heads = repaired('ZRANGE', ready_of(queue), 0, need, 'WITHSCORES')
      heads_read[queue] = heads
      read_order[#read_order + 1] = queue
      for i = 1, #heads, 2 do cand[#cand + 1] = {tonumber(heads[i + 1]), heads[i], queue} end
      -- A single queue's heads come in order already; the heads of several are merged.
      if #read_order > 1 then table.sort(cand, function(a, b) return a[1] < b[1] end) end
      for i = #cand, need + 1, -1 do cand[i] = nil end
    end
  end
  local taken, leases, started, again = {}, {}, {}, false
  for c = 1, #cand do
    local id, queue = cand[c][2], cand[c][3]
    taken[queue] = taken[queue] or {}
    table.insert(taken[queue], id)
    local key = prefix .. '@TASK@' .. id
    -- One read of what the worker needs; the reply is that read with this claim's own
    -- changes applied, so the hash is not read a second time.
    local f = valid_id(id) and redis.pcall('HMGET', key, unpack(CLAIM_FIELDS))
    if not f or f.err or not f[F.status] then
      dead(id)
      again = true  -- an entry that was not a task took a place: look again for real ones
    elseif f[F.expires_at] and (tonumber(f[F.expires_at]) or now + 1) <= now then
      repaired('ZREM', KEYS[2], id)  -- past its dispatch deadline: it fails, never runs
      expire_waiting(id, key)
      again = true
    else
      claimed = claimed + 1
      local token = token_base .. ':' .. claimed
      local workers = json_append(f[F.workers], worker_json)
      -- The first attempt's start is `started_at` alone (readers take it for
      -- `last_attempted_at` too), which keeps a result's hash smaller.
      local start = f[F.started_at] and 'last_attempted_at' or 'started_at'
      local fields = {'status', 'RUNNING', 'owner', token, start, now_text, 'workers', workers}
      -- Dispatched: the `ttl` deadline no longer applies (a retry or a recovery from a lost
      -- lease must not expire on the old one); blanked in the same write.
      if f[F.expires_at] then fields[#fields + 1], fields[#fields + 2] = 'expires_at', '' end
      redis.call('HSET', key, unpack(fields))
      leases[#leases + 1], leases[#leases + 2] = deadline_text, id
      started[#started + 1] = id
      f[F.status], f[F.workers], f[F[start]], f[F.expires_at] = 'RUNNING', workers, now_text, false
      f[#CLAIM_FIELDS + 1], f[#CLAIM_FIELDS + 2] = id, token
      out[#out + 1] = f
    end
  end
  for _, queue in ipairs(read_order) do
    local ready, heads, ids = ready_of(queue), heads_read[queue], taken[queue] or {}
    if #ids > 0 then redis.call('ZREM', ready, unpack(ids)) end
    -- The first one read and not taken; none: the read reached the end of the queue (it
    -- read one more than could be taken).
    local head = heads[2 * #ids + 2]
    if head then
      redis.call('ZADD', HEADS, head, queue)
    else
      redis.call('ZREM', HEADS, queue)
      forget_if_empty(queue)
    end
  end
  if #started > 0 then
    repaired('ZADD', KEYS[1], unpack(leases))
    repaired('ZREM', KEYS[2], unpack(started))
  end
  return again
end
while claim_round() and claimed < max_count do end

if claimed > 0 then tally(prefix, 'started', claimed) end
if claimed == 0 then
  -- Tokens left by enqueues this claim has now seen would only wake idle workers for nothing;
  -- an enqueue after this script pushes a fresh one, so no wake-up is lost.
  repaired('DEL', KEYS[5])
end
if claimed < max_count then  -- the queues ran dry: the worker waits, at most until this
  local first = first_due
  if #due_queues > 0 then  -- step 3 moved tasks: read the earliest due time again
    if #named > 0 then
      first = scores_of(DUE)[1]
      first = first and first[2]
    else
      first = tonumber(repaired('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2])
    end
  end
  if first then out[2] = math.max(first, now) end
end
return out
"""

# KEYS: running
# ARGV: prefix, result_ttl|'', count, then per task: id, token, status, return_json|'',
#       error_json|''
# Stores the outcomes of several tasks (the finishes a worker made at about the same time).
# Returns per task finished_at (ms), or 0 when the caller no longer owns it (a stale finish).
FINISH = r"""
local now = clock_ms()
local now_text = string.format('%d', now)  -- written per task: turned into text once
local prefix, result_ttl, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out, done = {}, {SUCCESSFUL = {}, FAILED = {}}
local succeeded, failed = 0, 0
for t = 0, count - 1 do
  local status = ARGV[6 + t * 5]
  if not done[status] then return redis.error_reply('ERR bad status ' .. tostring(status)) end
end
local finished = {}
for t = 0, count - 1 do
  local f = 4 + t * 5
  local id, token, status = ARGV[f], ARGV[f + 1], ARGV[f + 2]
  local key = prefix .. '@TASK@' .. id
  local held = redis.pcall('HMGET', key, 'owner', 'unique', 'errors')
  if held.err or held[1] ~= token then
    out[t + 1] = 0  -- not ours (or not a hash any more): rejected, nothing changed
  else
    if held[2] then release_unique(prefix, key, held[2]) end
    -- What only a waiting or running task needs goes, so a kept result takes less memory.
    redis.call('HDEL', key, 'owner', 'score', 'expires_at')
    local fields = {'status', status, 'finished_at', now_text}
    if ARGV[f + 3] ~= '' then
      fields[#fields + 1], fields[#fields + 2] = 'return', ARGV[f + 3]
    end
    if ARGV[f + 4] ~= '' then
      fields[#fields + 1], fields[#fields + 2] = 'errors', json_append(held[3], ARGV[f + 4])
    end
    redis.call('HSET', key, unpack(fields))
    if result_ttl then redis.call('EXPIRE', key, result_ttl) end
    local index = done[status]
    index[#index + 1], index[#index + 2] = now_text, id
    finished[#finished + 1] = id
    if status == 'SUCCESSFUL' then succeeded = succeeded + 1 else failed = failed + 1 end
    out[t + 1] = now
  end
end
if #finished > 0 then redis.call('ZREM', KEYS[1], unpack(finished)) end
for status, entries in pairs(done) do
  if #entries > 0 then repaired('ZADD', prefix .. '@DONE@' .. status, unpack(entries)) end
end
if succeeded > 0 then tally(prefix, 'succeeded', succeeded) end
if failed > 0 then tally(prefix, 'failed', failed) end
return out
"""

# KEYS: task, running, expiry, wake, queues, heads, due
# ARGV: prefix, id, token, delay_ms, error_json|'', handback '1'|'0', ttl_ms|''
# Puts an owned task back in its queue: a retry after `delay_ms` (in the deferred set) with its
# error recorded, or a graceful hand-back (ready at once, not counted as an attempt).
# Returns the time (ms) it is due again, or 0 when the caller no longer owns the task.
REQUEUE = r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[3] then return 0 end
local now = clock_ms()
local prefix, id = ARGV[1], ARGV[2]
local fields = redis.call('HMGET', KEYS[1], 'queue', 'score')
if not fields[1] or not tonumber(fields[2]) then return 0 end  -- unusable: its lease recovers it
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'status', 'READY')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'errors', json_append(redis.call('HGET', KEYS[1], 'errors'), ARGV[5]))
end
if ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[1], 'uncounted', 1)
  tally(prefix, 'handed_back')
else
  tally(prefix, 'retried')
end
local delay = tonumber(ARGV[4])
local due = now + delay
local ready, deferred = prefix .. '@READY@' .. fields[1], prefix .. '@DEFERRED@' .. fields[1]
usable(ready, 'zset', now)
usable(deferred, 'zset', now)
if delay > 0 then
  redis.call('ZADD', deferred, due, id)
  index_due(KEYS[7], fields[1], due)
else
  redis.call('ZADD', ready, fields[2], id)
  index_ready(KEYS[6], fields[1], tonumber(fields[2]))
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

# KEYS: task, expiry, queues, wake, heads
# ARGV: prefix, id, mode ('cancel' | 'retry'), result_ttl|''
# Operator actions on one task. cancel: a READY task still waiting (ready or deferred) ends
# FAILED with TaskCancelled. retry: a FAILED task, or a dead-lettered id whose hash is still
# usable, goes back to the front of its priority; earlier attempts no longer count against
# max_attempts. Returns 1 when done, or an error string saying why not.
OPERATE = r"""
local now = clock_ms()
local prefix, id, mode = ARGV[1], ARGV[2], ARGV[3]
if not is_hash(KEYS[1]) then return 'no such task (or its result expired)' end
local f = redis.call('HMGET', KEYS[1], 'status', 'queue', 'priority')
local status, queue, priority = f[1], f[2], tonumber(f[3])
if not queue or not priority then return 'the stored task has no queue or priority' end
local ready, deferred = prefix .. '@READY@' .. queue, prefix .. '@DEFERRED@' .. queue
usable(ready, 'zset', now)
usable(deferred, 'zset', now)
if mode == 'cancel' then
  if status ~= 'READY' then
    return 'only a task still waiting can be cancelled; it is ' .. tostring(status)
  end
  local removed = redis.call('ZREM', ready, id) + redis.call('ZREM', deferred, id)
  if removed == 0 then return 'the task is not waiting in its queue' end
  redis.call('ZREM', KEYS[2], id)
  finish_failed(prefix, KEYS[1], now, 'redis_tasks.exceptions.TaskCancelled',
                'redis_tasks.exceptions.TaskCancelled: cancelled by an operator', tonumber(ARGV[4]))
  return 1
end
local dead = redis.call('ZSCORE', prefix .. '@DEAD@', id)
if status ~= 'FAILED' and not dead then
  return 'only a failed or dead-lettered task can be retried; it is ' .. tostring(status)
end
local unique = redis.call('HGET', KEYS[1], 'unique')
if unique then  -- a retried unique task takes its key back, unless another task holds it
  local ukey = prefix .. '@UNIQUE@' .. unique
  usable(ukey, 'string', now)
  local holder = redis.call('GET', ukey)
  if holder and holder ~= id and is_waiting_or_running(prefix, holder) then
    return 'task ' .. holder .. ' with the same unique key is queued or running'
  end
  redis.call('SET', ukey, id)
end
-- The front of its priority; a finished task's score was dropped, so it gets this one.
local score = string.format('%.0f', (100 - priority) * 1099511627776)
redis.call('HSET', KEYS[1], 'status', 'READY', 'uncounted', starts_of(KEYS[1]), 'score', score)
redis.call('HDEL', KEYS[1], 'finished_at', 'owner')
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', prefix .. '@DONE@' .. 'FAILED', id)
redis.call('ZREM', prefix .. '@DEAD@', id)
redis.call('ZADD', ready, score, id)
redis.call('SADD', KEYS[3], queue)
index_ready(KEYS[5], queue, tonumber(score))
wake(KEYS[4])
return 1
"""

# KEYS: done index (of one status)
# ARGV: prefix, cutoff_ms, batch size
# Deletes finished results older than the cutoff, a batch at a time, but only those still
# finished (an operator may have retried one since). Returns how many ids were handled.
PURGE = r"""
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for i = 1, #ids do
  local key = ARGV[1] .. '@TASK@' .. ids[i]
  local status = is_hash(key) and redis.call('HGET', key, 'status')
  if status == 'SUCCESSFUL' or status == 'FAILED' or not status then
    redis.call('DEL', key)
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[1], ids[i])
end
return {#ids, deleted}
"""

# KEYS: running
# ARGV: prefix, lease_ms, id, token, id, token, ...
# Extends the leases still owned; returns the ids whose lease was lost. A task that this
# worker's own attempt finished (the last start is its, tokens are '<worker id>:<hex>:<n>') is
# not lost: the reply of that finish was still on its way when the renewal was sent.
RENEW = r"""
local now = clock_ms()
local prefix = ARGV[1]
local deadline = now + tonumber(ARGV[2])
local lost = {}
local function finished_by_us(f, token)
  if f[1] or (f[2] ~= 'SUCCESSFUL' and f[2] ~= 'FAILED') or not f[3] then return false end
  local worker_id = string.match(token, '^(.*):[^:]*:[^:]*$') or ''
  local tail = cjson.encode(worker_id) .. ']'
  return string.sub(f[3], -#tail) == tail
end
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = prefix .. '@TASK@' .. id
  local f = is_hash(key) and redis.call('HMGET', key, 'owner', 'status', 'workers')
  if f and f[1] == token then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  elseif not (f and finished_by_us(f, token)) then
    lost[#lost + 1] = id
  end
end
return lost
"""


# The fields of a task hash that a claim returns (what running it needs), in this order.
CLAIM_FIELDS = (
    "path", "queue", "priority", "backend", "args", "kwargs", "run_after", "enqueued_at",
    "started_at", "last_attempted_at", "errors", "workers", "uncounted", "status", "expires_at",
)  # fmt: skip


def _chunks(source: str) -> list[tuple[set[str], str]]:
    """The top-level definitions of a helper source, each with the names it defines (and the
    comment lines above it)."""
    chunks: list[tuple[set[str], str]] = []
    pending: list[str] = []
    for line in source.strip("\n").splitlines(keepends=True):
        found = re.match(r"local function (\w+)|local ([\w, ]+?) =", line)
        if found:
            names = found.group(1) or found.group(2)
            chunks.append(({n.strip() for n in names.split(",")}, "".join(pending) + line))
            pending = []
        elif line.startswith(("--", "\n")) or not chunks:
            pending.append(line)
        else:
            names, text = chunks[-1]
            chunks[-1] = (names, text + "".join(pending) + line)
            pending = []
    return chunks


_HELPERS = _chunks(_PRELUDE + _ENQUEUE_BATCH)


def _helpers_for(body: str) -> str:
    """Only the helpers a script uses, with those they use: each helper the script defines is a
    closure built again on every call, so the unused ones would cost every call (EVALSHA runs
    the whole source)."""
    wanted: set[int] = set()
    texts = [body]
    while texts:
        text = texts.pop()
        for i, (names, chunk) in enumerate(_HELPERS):
            if i not in wanted and any(re.search(rf"\b{n}\b", text) for n in names):
                wanted.add(i)
                texts.append(chunk)
    return "".join(_HELPERS[i][1] for i in sorted(wanted))


def _source(body: str) -> str:
    text = _helpers_for(body) + body
    text = text.replace("@CLAIM_FIELDS@", "{" + ", ".join(f"'{f}'" for f in CLAIM_FIELDS) + "}")
    for marker, suffix in (
        ("@READY@", keys.READY),
        ("@DEFERRED@", keys.DEFERRED),
        ("@TASK@", keys.TASK),
        ("@UNIQUE@", keys.UNIQUE),
        ("@DONE@", keys.DONE),
        ("@DEAD@", keys.DEAD),
        ("@STATS@", keys.STATS),
        ("@RUNNING@", keys.RUNNING),
    ):
        text = text.replace(marker, suffix)
    return text


ENQUEUE_SOURCE = _source(ENQUEUE)
TICK_SOURCE = _source(TICK)
CLAIM_SOURCE = _source(CLAIM)
FINISH_SOURCE = _source(FINISH)
REQUEUE_SOURCE = _source(REQUEUE)
RENEW_SOURCE = _source(RENEW)
OPERATE_SOURCE = _source(OPERATE)
PURGE_SOURCE = _source(PURGE)
