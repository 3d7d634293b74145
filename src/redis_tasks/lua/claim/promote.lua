-- Part of claim.lua (it uses the claim's locals).
-- 3. Deferred tasks that are due move to the front of their priority in the ready set, so a
--    backlog of tasks queued before them does not make them late; among themselves they keep
--    the order of their due times. Their scores lie in the lower half of the priority's band,
--    below every sequence number (< PROMOTED_OFFSET = 2^39) of tasks queued normally.
-- The earliest due time read here is reused at the end when no deferred task moved (only
-- this step changes `due`).
-- Returns the queues whose tasks moved, and the earliest due time it read.
local function promote()
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
      local key = prefix .. '{{TASK}}' .. id
      local priority = valid_id(id) and is_hash(key) and tonumber(redis.call('HGET', key, 'priority'))
      redis.call('ZREM', deferred, id)
      if priority then
        local band = (100 - priority) * {{PRIORITY_STEP}} - {{PROMOTED_OFFSET}}
        local score = band + (due_at % {{DUE_WRAP}})
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
  return due_queues, first_due
end
