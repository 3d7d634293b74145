-- Operator actions on one task. cancel: a READY task still waiting (ready, deferred or held
-- back by a limit) ends FAILED with TaskCancelled; a RUNNING one is marked, and its worker is
-- told through its `cancel:<worker id>` list: it cancels the task (an async one at once, a sync
-- one at its next check), and whatever it stores then is TaskCancelled. retry: a FAILED task, or a dead-lettered id whose hash is still
-- usable, goes back to the front of its priority; earlier attempts no longer count against
-- max_attempts. Returns 1 when done, or an error string saying why not.
-- KEYS: task, expiry, queues, wake, heads
-- ARGV: prefix, id, mode ('cancel' | 'retry'), result_ttl|''
--- @include "lib/finish_failed"
--- @include "lib/attempts"
local now = clock_ms()
local prefix, id, mode = ARGV[1], ARGV[2], ARGV[3]
if not is_hash(KEYS[1]) then return 'no such task (or its result expired)' end
local f = redis.call('HMGET', KEYS[1], 'status', 'queue', 'priority')
local status, queue, priority = f[1], f[2], tonumber(f[3])
if not queue or not priority then return 'the stored task has no queue or priority' end
local ready, deferred = prefix .. '{{READY}}' .. queue, prefix .. '{{DEFERRED}}' .. queue
usable(ready, 'zset', now)
usable(deferred, 'zset', now)
if mode == 'cancel' then
  if status == 'RUNNING' then
    local workers = redis.call('HGET', KEYS[1], 'workers') or ''
    local worker = cjson.decode(workers ~= '' and workers or '[]')
    worker = worker[#worker]
    if not worker then return 'the running task names no worker' end
    redis.call('HSET', KEYS[1], 'cancel', '1')
    local list = prefix .. '{{CANCEL}}' .. worker
    redis.call('RPUSH', list, id)
    redis.call('PEXPIRE', list, KEEP_ASIDE_MS)
    return 1
  end
  if status ~= 'READY' then
    return 'only a task waiting or running can be cancelled; it is ' .. tostring(status)
  end
  local removed = redis.call('ZREM', ready, id) + redis.call('ZREM', deferred, id)
    + unhold(prefix, KEYS[1], id, queue)
  if removed == 0 then return 'the task is not waiting in its queue' end
  redis.call('ZREM', KEYS[2], id)
  finish_failed(prefix, KEYS[1], now, 'redis_tasks.exceptions.TaskCancelled',
                'redis_tasks.exceptions.TaskCancelled: cancelled by an operator', tonumber(ARGV[4]))
  return 1
end
local dead = redis.call('ZSCORE', prefix .. '{{DEAD}}', id)
if status ~= 'FAILED' and not dead then
  return 'only a failed or dead-lettered task can be retried; it is ' .. tostring(status)
end
local unique = redis.call('HGET', KEYS[1], 'unique')
if unique then  -- a retried unique task takes its key back, unless another task holds it
  local ukey = prefix .. '{{UNIQUE}}' .. unique
  usable(ukey, 'string', now)
  local holder = redis.call('GET', ukey)
  if holder and holder ~= id and is_waiting_or_running(prefix, holder) then
    return 'task ' .. holder .. ' with the same unique key is queued or running'
  end
  redis.call('SET', ukey, id)
end
-- The front of its priority; a finished task's score was dropped, so it gets this one.
local score = string.format('%.0f', (100 - priority) * {{PRIORITY_STEP}})
redis.call('HSET', KEYS[1], 'status', 'READY', 'uncounted', starts_of(KEYS[1]), 'score', score)
redis.call('HDEL', KEYS[1], 'finished_at', 'owner')
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', prefix .. '{{DONE}}' .. 'FAILED', id)
redis.call('ZREM', prefix .. '{{DEAD}}', id)
redis.call('ZADD', ready, score, id)
redis.call('SADD', KEYS[3], queue)
index_ready(KEYS[5], queue, tonumber(score))
wake(KEYS[4])
return 1
