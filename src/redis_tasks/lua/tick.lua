-- A periodic tick: enqueued once however many workers call this for it, because the tick is
-- compared and recorded in the same script that enqueues.
-- KEYS: queues, sequence, expiry, wake, heads, due, schedule
-- ARGV: prefix, tick_ms, mode ('enqueue' | 'skip'), then the batch of one task from ARGV[4].
-- Returns the batch reply, or {2} when this tick (or a later one) was already handled, {3}
-- when it was skipped.
--- @include "lib/enqueue_batch"
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
    redis.call('HSET', ARGV[1] .. '{{TASK}}' .. ARGV[8], 'tick', tick)
  end
end
return reply
