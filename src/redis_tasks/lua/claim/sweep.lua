-- Part of claim.lua (it uses the claim's locals): the sweeps, run at most once per period
-- across all workers. Waiting tasks past their dispatch deadline fail; leases past their
-- deadline go back to their queue (or fail the task once its attempts are used up); index
-- entries of expired results and dead workers go.
-- Sweeps, once per period across all workers.
local function sweep()
  repaired('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - KEEP_ASIDE_MS)
  repaired('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)  -- workers that stopped heartbeating
  sweep_parking(prefix, now)  -- and those that died parked (lib/parking.lua)
  if result_ttl then
    for _, status in ipairs({'SUCCESSFUL', 'FAILED'}) do
      repaired('ZREMRANGEBYSCORE', prefix .. '{{DONE}}' .. status, '-inf', now - result_ttl * 1000)
    end
  end
  -- 1. Waiting tasks past their dispatch deadline (`ttl`) fail and never run.
  local expired = repaired('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 500)
  for i = 1, #expired do
    local id = expired[i]
    local key = prefix .. '{{TASK}}' .. id
    redis.call('ZREM', KEYS[2], id)
    local queue = valid_id(id) and is_hash(key) and redis.call('HGET', key, 'queue')
    if queue then
      local removed = repaired('ZREM', ready_of(queue), id)
        + repaired('ZREM', deferred_of(queue), id) + unhold(prefix, key, id, queue)
      if removed > 0 then expire_waiting(id, key) end
    end
  end
  -- 2. Leases past their deadline: the worker is gone. Requeue at the original priority, or
  --    fail the task once it has used up its attempts (a poison task).
  local lost = repaired('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
  for i = 1, #lost do
    local id = lost[i]
    local key = prefix .. '{{TASK}}' .. id
    redis.call('ZREM', KEYS[1], id)
    local fields = valid_id(id) and is_hash(key)
      and redis.call('HMGET', key, 'queue', 'score', 'max_attempts', 'cancel')
    if not fields or not fields[1] or not tonumber(fields[2]) then
      dead(id)
    elseif fields[4] then  -- an operator cancelled it while it ran: cancelled, never again
      redis.call('HDEL', key, 'cancel')
      finish_failed(prefix, key, now, 'redis_tasks.exceptions.TaskCancelled',
        'redis_tasks.exceptions.TaskCancelled: cancelled by an operator while it ran (its '
        .. 'worker was lost)', result_ttl)
    else
      tally(prefix, 'lost')
      local attempts = attempts_of(key)
      local message = 'redis_tasks.exceptions.WorkerLost: the worker running attempt ' .. attempts
        .. ' stopped renewing its lease (killed, crashed, paused or cut off from Redis)'
      if attempts >= (tonumber(fields[3]) or max_attempts) then
        finish_failed(prefix, key, now, 'redis_tasks.exceptions.WorkerLost', message, result_ttl)
      else
        release_slots(prefix, key, id)
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

