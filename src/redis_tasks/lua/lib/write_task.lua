--- @include "lib/repair"
-- One new task written and queued, ready or deferred until its run_after (the caller updates the
-- queue index and the set of queues; `spec` holds the task's fields as an enqueue passes them,
-- '' for none). `seq` is its sequence number (FIFO within its priority); `ttl` its dispatch
-- deadline (ms) or nil. Returns its queue, 'ready' or 'deferred', and its score or due time as a
-- number and as text.
local function write_task(prefix, spec, backend, seq, ttl, now, now_text)
  local id, queue = spec.id, spec.queue
  local key = prefix .. '{{TASK}}' .. id
  local score = (100 - tonumber(spec.priority)) * {{PRIORITY_STEP}} + seq
  local score_text = string.format('%d', score)
  -- run_after is given in microseconds (stored as given); it is due at its millisecond.
  local run_after_us = tonumber(spec.run_after)
  local run_after = run_after_us and math.floor(run_after_us / 1000)
  local due = (run_after and run_after > now) and run_after or now
  local fields = {'path', spec.path, 'queue', queue, 'priority', spec.priority,
                  'score', score_text, 'args', spec.args, 'kwargs', spec.kwargs,
                  'backend', backend, 'status', 'READY', 'enqueued_at', now_text}
  local function field(name, value)
    if value and value ~= '' then fields[#fields + 1], fields[#fields + 2] = name, value end
  end
  field('max_attempts', spec.max_attempts)
  field('sig', spec.sig)
  field('limits', spec.limits)
  field('wf', spec.wf)
  field('wf_prev', spec.wf_prev)  -- its first argument is the previous step's value
  field('trace', spec.trace)  -- the trace context of its enqueue (tracing.py)
  if spec.unique and spec.unique ~= '' then
    field('unique', spec.unique)
    redis.call('SET', prefix .. '{{UNIQUE}}' .. spec.unique, id)
  end
  if run_after then field('run_after', spec.run_after) end
  local expires_at = ttl and string.format('%d', due + ttl)
  field('expires_at', expires_at)
  redis.call('HSET', key, unpack(fields))
  if expires_at then repaired('ZADD', prefix .. '{{EXPIRY}}', expires_at, id) end
  if due > now then
    local due_at = string.format('%d', run_after)
    repaired('ZADD', prefix .. '{{DEFERRED}}' .. queue, due_at, id)
    return queue, 'deferred', run_after, due_at
  end
  repaired('ZADD', prefix .. '{{READY}}' .. queue, score_text, id)
  return queue, 'ready', score, score_text
end
