--- @include "lib/clock"
--- @include "lib/repair"
--- @include "lib/unique"
--- @include "lib/index"
--- @include "lib/stats"
--- @include "lib/depth"
--- @include "lib/write_task"
--- @include "lib/handoff"
-- Queue a batch of tasks, all or none (shared by enqueue.lua and tick.lua).
-- KEYS: queues, sequence, expiry, wake, heads, due (then anything the caller uses)
-- ARGV from `at`: maxsize|'', ttl_ms|'', backend alias, count, then per task TASK_FIELDS values:
--   id, queue, priority, run_after_us|'', path, args, kwargs, unique key|'',
--   max_attempts|'' (the task's own, for recovering from lost workers), signature|'',
--   limits|'' (its own limit groups: see lib/limits.lua), wf|'' (its workflow: lib/workflow.lua),
--   trace|'' (the W3C trace context of its enqueue, with tracing on: tracing.py)
-- With `handoff` (enqueue.lua), a new ready task goes straight to an idle worker when its claim
-- would take it next (lib/handoff.lua); idle workers are woken for the rest.
-- Returns {1, now, existing id|'' per task} when queued, {0, waiting} when the backend would
-- pass maxsize, {-1, id} when an id is taken by another task. An existing id is that of a
-- unique task already queued or running, returned instead of a new one, or the task's own id
-- when this very call was queued before (a send repeated after a lost reply: idempotent).
local TASK_FIELDS = 13  -- (workflow.lua, which includes this file, walks the batch by it too)
local function enqueue_batch(prefix, at, now, handoff)
  local maxsize, ttl = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local backend, count = ARGV[at + 2], tonumber(ARGV[at + 3])
  local first = at + 4
  local existing, claimed_keys, new = {}, {}, 0
  for t = 0, count - 1 do
    local f = first + t * TASK_FIELDS
    local id, unique = ARGV[f], ARGV[f + 7]
    existing[t + 1] = ''
    if redis.call('EXISTS', prefix .. '{{TASK}}' .. id) == 1 then
      -- The same call sent again (a retried send whose first reply was lost): the task it
      -- queued is the answer. Any other task under this id is a conflict.
      local f_stored = redis.pcall('HMGET', prefix .. '{{TASK}}' .. id,
                                   'path', 'queue', 'priority', 'args', 'kwargs')
      if f_stored.err or f_stored[1] ~= ARGV[f + 4] or f_stored[2] ~= ARGV[f + 1]
         or f_stored[3] ~= ARGV[f + 2] or f_stored[4] ~= ARGV[f + 5]
         or f_stored[5] ~= ARGV[f + 6] then
        return {-1, id}
      end
      existing[t + 1] = id
    end
    if unique ~= '' and existing[t + 1] == '' then
      local holder = claimed_keys[unique]
      if not holder then
        local ukey = prefix .. '{{UNIQUE}}' .. unique
        local current = redis.call('TYPE', ukey)['ok'] == 'string' and redis.call('GET', ukey)
        if current and is_waiting_or_running(prefix, current) then holder = current end
      end
      if holder then existing[t + 1] = holder else claimed_keys[unique] = id end
    end
    if existing[t + 1] == '' then new = new + 1 end
  end
  if maxsize and new > 0 then
    local waiting = waiting_tasks(prefix, KEYS[1])
    if waiting + new > maxsize then return {0, waiting} end
  end
  -- From here on every step succeeds (a key of a wrong type is moved aside, never an error),
  -- so the batch is queued whole.
  -- Numbers are turned into text here, once each: a number handed to redis.call is formatted
  -- with '%.17g' by Redis, which costs as much as a small command.
  local now_text = string.format('%d', now)
  local added, best_ready, best_text, first_due, due_text = {}, {}, {}, {}, {}
  local new_ready = {}  -- queue -> how many new ready tasks
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
      seq = seq + 1
      local queue, kind, at, at_text = write_task(prefix, {
        id = ARGV[f], queue = ARGV[f + 1], priority = ARGV[f + 2], run_after = ARGV[f + 3],
        path = ARGV[f + 4], args = ARGV[f + 5], kwargs = ARGV[f + 6], unique = ARGV[f + 7],
        max_attempts = ARGV[f + 8], sig = ARGV[f + 9], limits = ARGV[f + 10], wf = ARGV[f + 11],
        trace = ARGV[f + 12],
      }, backend, seq, ttl, now, now_text)
      if not added[queue] then
        repaired('SADD', KEYS[1], queue)
        added[queue] = true
      end
      if kind == 'deferred' then
        if not first_due[queue] or at < first_due[queue] then
          first_due[queue], due_text[queue] = at, at_text
        end
      else
        new_ready[queue] = (new_ready[queue] or 0) + 1
        if not best_ready[queue] or at < best_ready[queue] then
          best_ready[queue], best_text[queue] = at, at_text
        end
      end
    end
  end
  for queue, text in pairs(best_text) do index_ready(KEYS[5], queue, text) end
  for queue, text in pairs(due_text) do index_due(KEYS[6], queue, text) end
  if new > 0 then
    -- Idle workers are woken unless every new task went to one directly.
    handoff = handoff and repaired('HLEN', prefix .. '{{PARKING}}') > 0  -- anyone parked?
    local rouse = next(due_text) ~= nil or not handoff
    if handoff then
      for queue, count in pairs(new_ready) do
        local handed = 0
        while handed < count and hand_off(prefix, queue, now, now_text) do handed = handed + 1 end
        if handed < count or redis.call('ZCARD', prefix .. '{{READY}}' .. queue) > 0 then
          rouse = true  -- (a task handed over may have been an older one, of a better score)
        end
      end
    end
    if rouse then wake(KEYS[4]) end
    tally(prefix, 'enqueued', new)
  end
  local out = {1, now}
  for t = 1, count do out[#out + 1] = existing[t] end
  return out
end
