--- @include "lib/repair"
--- @include "lib/stats"
--- @include "lib/parking"
--- @include "lib/lease"
-- Handing a task to an idle worker inside the enqueue that queues it: the worker, blocked on
-- its inbox, gets the task already leased to it and starts it at once, without a claim's round
-- trip. Only what its own claim would have taken next is handed over: the best ready task of
-- the queue, when no task of another queue it serves is as good, no deferred task of theirs is
-- due, no limit applies (the task's own, its queue's, or a window about to release held
-- tasks), and the queue is not paused. Otherwise the worker is woken and claims as usual. The
-- lease is the same as a claim's (lib/lease.lua), so a worker that dies holding the task loses
-- nothing: the sweep returns it when the lease runs out.
local HANDOFF_FIELDS = {{CLAIM_FIELDS}}
local H = {}
for i, name in ipairs(HANDOFF_FIELDS) do H[name] = i end

-- The worker parked last among those serving `queue` (by name, or every queue), with what it
-- parked with; nil when none is parked now. Entries left by an unpark that missed them go.
local function parked_worker(prefix, queue, now)
  local best, best_info
  for _, set in ipairs({prefix .. '{{PARKED}}' .. queue, prefix .. '{{PARKED_ANY}}'}) do
    while true do
      local top = repaired('ZRANGE', set, -1, -1, 'WITHSCORES')
      if #top == 0 or tonumber(top[2]) <= now then break end  -- none, or all past their `till`
      local info = parking_of(prefix, top[1])
      if info then
        if not best_info or info[4] > best_info[4] then best, best_info = top[1], info end
        break
      end
      redis.call('ZREM', set, top[1])
    end
  end
  return best, best_info
end

-- Whether a task of another queue the worker serves could come before one scored `score`:
-- a better (or stale, hence lower) head bound, a due deferred task, or a window of a limit
-- that releases held tasks now. Conservative: the claim sorts out whatever this declines.
local function better_elsewhere(prefix, queues, queue, score, now)
  local heads, due = prefix .. '{{HEADS}}', prefix .. '{{DUE}}'
  if #queues == 0 then
    local best = redis.call('ZRANGE', heads, 0, 1, 'WITHSCORES')
    for i = 1, #best, 2 do
      if best[i] ~= queue and tonumber(best[i + 1]) < score then return true end
    end
    local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
    if #first > 0 and tonumber(first[2]) <= now then return true end
  else
    local bounds = redis.call('ZMSCORE', heads, unpack(queues))
    local dues = redis.call('ZMSCORE', due, unpack(queues))
    for i = 1, #queues do
      if queues[i] ~= queue and bounds[i] and tonumber(bounds[i]) < score then return true end
      if dues[i] and tonumber(dues[i]) <= now then return true end
    end
  end
  local release = redis.call('ZRANGE', prefix .. '{{HELD_DUE}}', 0, 0, 'WITHSCORES')
  return #release > 0 and tonumber(release[2]) <= now
end

-- Hand the best ready task of `queue` to a parked worker; whether one was handed over.
local function hand_off(prefix, queue, now, now_text)
  local worker_id, info = parked_worker(prefix, queue, now)
  if not worker_id then return false end
  local queues, lease_ms, limited = info[1], info[2], info[3]
  if limited[queue] or redis.call('SISMEMBER', prefix .. '{{PAUSED}}', queue) == 1 then
    return false
  end
  local ready = prefix .. '{{READY}}' .. queue
  local head = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #head == 0 or better_elsewhere(prefix, queues, queue, tonumber(head[2]), now) then
    return false
  end
  local id = head[1]
  local key = prefix .. '{{TASK}}' .. id
  local f = redis.pcall('HMGET', key, unpack(HANDOFF_FIELDS))
  if f.err or f[H.status] ~= 'READY' or (f[H.limits] and f[H.limits] ~= '')
     or (f[H.expires_at] and (tonumber(f[H.expires_at]) or now + 1) <= now) then
    return false  -- the claim deals with it (a limit, an expiry, an entry that is no task)
  end
  redis.call('HSET', key, unpack(lease_fields(f, H, #HANDOFF_FIELDS, id, cjson.encode(worker_id),
                                              now_text)))
  redis.call('ZREM', ready, id)
  local next_head = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #next_head > 0 then
    redis.call('ZADD', prefix .. '{{HEADS}}', next_head[2], queue)
  else
    redis.call('ZREM', prefix .. '{{HEADS}}', queue)
  end
  repaired('ZADD', prefix .. '{{RUNNING}}', now + lease_ms, id)
  repaired('ZREM', prefix .. '{{EXPIRY}}', id)
  tally(prefix, 'started', 1, now)
  tally(prefix, 'handed_off', 1, now)
  if (tonumber(info[5]) or 1) > 1 then  -- room for more: it stays parked
    info[5] = info[5] - 1
    redis.call('HSET', prefix .. '{{PARKING}}', worker_id, cjson.encode(info))
  else
    unpark(prefix, worker_id)
  end
  local inbox = prefix .. '{{INBOX}}' .. worker_id
  repaired('LPUSH', inbox, cjson.encode(f))
  redis.call('PEXPIRE', inbox, lease_ms)
  return true
end
