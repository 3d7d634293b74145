--- @include "lib/clock"
--- @include "lib/json"
--- @include "lib/repair"
--- @include "lib/index"
--- @include "lib/stats"
--- @include "lib/write_task"
-- Workflows (workflows.py): chains, groups and chords, advanced by the script that stores a
-- task's final outcome (finish.lua, and lib/finish_failed.lua for outcomes a worker never
-- stored: expiry, a lease lost too often, a cancel), in the same atomic step. So a worker crash,
-- a retried member or two workers finishing the last members at once can never fire a chord's
-- callback twice, or never.
--
-- `workflow:<id>` is a hash: `kind` (chain, group, chord), `ids` (JSON: the steps' or members'
-- ids, in order), `specs` (JSON: the tasks not queued yet, as write_task takes them: a chain's
-- later steps, position by position, or a chord's callback), `total`, `done` (members with a
-- final outcome), `failed` (the first member or step that failed), `state` (RUNNING, SUCCESSFUL,
-- FAILED), `backend`, `ttl` (ms, '' for none), `result_ttl` (s, '' for none). A task of a
-- workflow has `wf` = '<workflow id>|<position>' in its hash (-1: a chord's callback), and
-- `wf_counted:<workflow id>` once its final outcome was counted (an operator's retry does not
-- count twice).

-- One task queued from a spec kept in the workflow (a chain's next step, a chord's callback).
local function queue_one(prefix, spec, backend, ttl, now)
  local seq = repaired('INCR', prefix .. '{{SEQUENCE}}')
  local queue, kind, _, at_text = write_task(prefix, spec, backend, seq, ttl, now,
                                             string.format('%d', now))
  repaired('SADD', prefix .. '{{QUEUES}}', queue)
  if kind == 'deferred' then
    index_due(prefix .. '{{DUE}}', queue, at_text)
  else
    index_ready(prefix .. '{{HEADS}}', queue, at_text)
  end
  wake(prefix .. '{{WAKE}}')
  tally(prefix, 'enqueued', 1)
end

-- `value` (JSON) as the first argument of the spec's own arguments (JSON array text).
local function with_first(value, args)
  if args == '[]' then return '[' .. value .. ']' end
  return '[' .. value .. ',' .. string.sub(args, 2)
end

-- A task of the workflow that will not run, recorded as FAILED with an error saying why.
local function record_failed(prefix, spec, backend, now, class_path, message, result_ttl)
  local key = prefix .. '{{TASK}}' .. spec.id
  redis.call('HSET', key, 'path', spec.path, 'queue', spec.queue, 'priority', spec.priority,
    'args', spec.args, 'kwargs', spec.kwargs, 'backend', backend, 'status', 'FAILED',
    'enqueued_at', now, 'finished_at', now, 'wf', spec.wf,
    'errors', '[' .. error_json(class_path, class_path .. ': ' .. message) .. ']')
  if result_ttl then redis.call('EXPIRE', key, result_ttl) end
  index_done(prefix, key, 'FAILED', now)
  tally(prefix, 'failed', 1, now)
end

local function end_workflow(wkey, state, result_ttl)
  redis.call('HSET', wkey, 'state', state)
  if result_ttl then redis.call('EXPIRE', wkey, result_ttl) end
end

-- The task `id` (its hash `key`) reached its final outcome `status`, for the workflow `link`
-- ('<workflow id>|<position>') names.
local function workflow_step(prefix, key, id, link, status, return_json, now)
  local wf_id, position = string.match(link, '^(.*)|(%-?%d+)$')
  if not wf_id or redis.call('HSETNX', key, 'wf_counted:' .. wf_id, '1') == 0 then return end
  local wkey = prefix .. '{{WORKFLOW}}' .. wf_id
  local w = redis.call('HMGET', wkey, 'kind', 'total', 'specs', 'backend', 'ttl', 'result_ttl')
  if not w[1] then return end  -- its record expired: nothing left to advance
  local kind, total, position = w[1], tonumber(w[2]), tonumber(position)
  local backend, ttl, result_ttl = w[4], tonumber(w[5]), tonumber(w[6])
  if status ~= 'SUCCESSFUL' then redis.call('HSETNX', wkey, 'failed', id) end
  if kind == 'chain' then
    local specs = cjson.decode(w[3])
    if status == 'SUCCESSFUL' and position < total - 1 then
      local spec = specs[position + 1]
      spec.wf = wf_id .. '|' .. (position + 1)
      if spec.previous == '1' then
        spec.args, spec.wf_prev = with_first(return_json or 'null', spec.args), '1'
      end
      queue_one(prefix, spec, backend, ttl, now)
      redis.call('HSET', wkey, 'at', position + 1)
      return
    end
    for later = position + 1, total - 1 do  -- a step failed: the rest never run, visibly
      local spec = specs[later]
      spec.wf = wf_id .. '|' .. later
      record_failed(prefix, spec, backend, now, 'redis_tasks.exceptions.TaskCancelled',
        'step ' .. position .. ' (task ' .. id .. ') of its chain failed', result_ttl)
    end
    end_workflow(wkey, status, result_ttl)
    return
  end
  if position == -1 then  -- a chord's callback: the chord ends with it
    end_workflow(wkey, status, result_ttl)
    return
  end
  if redis.call('HINCRBY', wkey, 'done', 1) < total then return end
  local failed = redis.call('HGET', wkey, 'failed')
  if kind == 'chord' then
    local spec = cjson.decode(w[3])[1]
    spec.wf = wf_id .. '|-1'
    if failed then
      record_failed(prefix, spec, backend, now, 'redis_tasks.exceptions.ChordMemberFailed',
        'member ' .. failed .. ' failed (see its errors); the callback did not run', result_ttl)
    else  -- every member's return value, in order, as the callback's first argument
      local values = {}
      for i, member in ipairs(cjson.decode(redis.call('HGET', wkey, 'ids'))) do
        values[i] = redis.call('HGET', prefix .. '{{TASK}}' .. member, 'return') or 'null'
      end
      spec.args = with_first('[' .. table.concat(values, ',') .. ']', spec.args)
      spec.wf_prev = '1'
      queue_one(prefix, spec, backend, ttl, now)
      return
    end
  end
  end_workflow(wkey, failed and 'FAILED' or 'SUCCESSFUL', result_ttl)
end

-- The task's final outcome, for each workflow its `wf` field links it to (';'-separated: a
-- unique task may stand for members of several).
local function workflow_outcome(prefix, key, id, wf, status, return_json, now)
  for link in string.gmatch(wf, '[^;]+') do
    workflow_step(prefix, key, id, link, status, return_json, now)
  end
end
