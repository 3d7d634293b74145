--- @include "lib/repair"
-- The tasks waiting in a backend instance: ready and deferred ones in every queue, and the ones a
-- limit holds back (off their ready sets). What `maxsize` bounds and the depth chart draws.
-- One ZCARD per queue and set, so it is counted at enqueue only under a maxsize, and sampled
-- at most once a minute for the chart.
local function waiting_tasks(prefix, queues_key)
  local waiting = 0
  local queues = repaired('SMEMBERS', queues_key)
  for i = 1, #queues do
    waiting = waiting + repaired('ZCARD', prefix .. '{{READY}}' .. queues[i])
      + repaired('ZCARD', prefix .. '{{DEFERRED}}' .. queues[i])
  end
  for _, held in ipairs(repaired('HVALS', prefix .. '{{HELD_N}}')) do
    waiting = waiting + (tonumber(held) or 0)
  end
  return waiting
end
