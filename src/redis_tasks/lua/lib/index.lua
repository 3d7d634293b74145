--- @include "lib/repair"
-- The index of queues, so that a claim reads only the best queues, not every one: `heads`
-- scores each queue holding ready tasks with a lower bound of its best ready score, `due` each
-- queue holding deferred tasks with a lower bound of its earliest due time. Whatever adds to a
-- ready or deferred set lowers the bound (ZADD LT); removals leave it low, and the claim that
-- next reads the queue puts the true value back. A bound is never above the truth, so nothing
-- waiting is ever overlooked.
local function index_ready(heads, queue, score) repaired('ZADD', heads, 'LT', score, queue) end
local function index_due(due, queue, at) repaired('ZADD', due, 'LT', at, queue) end
-- Finished results are indexed by status and finish time, for listing and purging; entries
-- whose result expired are swept by the claim script.
local function index_done(prefix, key, status, now)
  local index = prefix .. '{{DONE}}' .. status
  usable(index, 'zset', now)
  redis.call('ZADD', index, now, string.sub(key, #prefix + #'{{TASK}}' + 1))
end
-- Wake-up tokens for idle workers. They pile up while every worker is busy; trimmed back to 64
-- once past 128, so the trim is paid once every 64 enqueues, not by each.
local function wake(key)
  if repaired('LPUSH', key, '1') > 128 then redis.call('LTRIM', key, 0, 63) end
end
