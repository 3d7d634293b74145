-- Puts an owned task back in its queue: a retry after `delay_ms` (in the deferred set) with its
-- error recorded, or a graceful hand-back (ready at once, not counted as an attempt).
-- KEYS: task, running, expiry, wake, queues, heads, due
-- ARGV: prefix, id, token, delay_ms, error_json|'', handback '1'|'0', ttl_ms|'', result_ttl|''
-- A task an operator cancelled while it ran is not put back: it ends FAILED, TaskCancelled.
-- Returns the time (ms) it is due again, or 0 when the caller no longer owns the task.
--- @include "lib/finish_failed"
--- @include "lib/attempts"
local now = clock_ms()
local held = redis.call('HMGET', KEYS[1], 'owner', 'status', 'workers')
if held[1] ~= ARGV[3] then
  -- Not ours; or this very requeue was stored before (a send repeated after a lost reply).
  return settled_by(held, ARGV[3]) and held[2] == 'READY' and now or 0
end
local prefix, id = ARGV[1], ARGV[2]
local fields = redis.call('HMGET', KEYS[1], 'queue', 'score', 'cancel')
if not fields[1] or not tonumber(fields[2]) then return 0 end  -- unusable: its lease recovers it
redis.call('ZREM', KEYS[2], id)
release_slots(prefix, KEYS[1], id)
if fields[3] then
  redis.call('HDEL', KEYS[1], 'cancel')
  finish_failed(prefix, KEYS[1], now, 'redis_tasks.exceptions.TaskCancelled',
    'redis_tasks.exceptions.TaskCancelled: cancelled by an operator while it ran', tonumber(ARGV[8]))
  return now
end
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
local ready, deferred = prefix .. '{{READY}}' .. fields[1], prefix .. '{{DEFERRED}}' .. fields[1]
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
