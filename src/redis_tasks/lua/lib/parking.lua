--- @include "lib/repair"
-- Idle workers parked for a hand-off at enqueue (lib/handoff.lua). A claim that found fewer
-- tasks than its worker has room for parks the worker: listed under each queue it serves
-- (`parked:<queue>`, or `parked_any` when it serves every queue) until `till` (ms), with what
-- a hand-off needs of it in `parking`. The worker then blocks on its inbox and the wake list.
-- The hand-off that fills its room unparks it, and so does its next claim (lua/claim.lua) or
-- its stop (lua/unpark.lua); a worker that died parked is handed tasks at most until `till`,
-- and its entries go with the claim's sweep.
local function parked_sets(prefix, queues)
  if #queues == 0 then return {prefix .. '{{PARKED_ANY}}'} end
  local sets = {}
  for i, queue in ipairs(queues) do sets[i] = prefix .. '{{PARKED}}' .. queue end
  return sets
end
-- `limited`: the queues served that have a queue limit ({queue: true}); nothing of theirs is
-- handed over (a limit is the claim's to apply). `room`: how many tasks it may be handed (its
-- free slots); the last one unparks it. The keys expire with the last park: nothing is left
-- behind once every worker is gone.
local function park(prefix, worker_id, queues, lease_ms, limited, till, now, room)
  for _, set in ipairs(parked_sets(prefix, queues)) do
    repaired('ZADD', set, till, worker_id)
    redis.call('PEXPIRE', set, till - now)
  end
  local parking = prefix .. '{{PARKING}}'
  repaired('HSET', parking, worker_id, cjson.encode({queues, lease_ms, limited, till, room}))
  redis.call('PEXPIRE', parking, till - now)
end
-- What `park` recorded of a worker ({queues, lease_ms, limited, till, room}), or nil.
local function parking_of(prefix, worker_id)
  local found = repaired('HGET', prefix .. '{{PARKING}}', worker_id)
  return found and cjson.decode(found)
end
local function unpark(prefix, worker_id)
  local info = parking_of(prefix, worker_id)
  if not info then return end
  for _, set in ipairs(parked_sets(prefix, info[1])) do repaired('ZREM', set, worker_id) end
  redis.call('HDEL', prefix .. '{{PARKING}}', worker_id)
end
-- The rows (as the claim returns them) of the tasks handed to a worker that it has not taken
-- from its inbox yet, still leased to it; the inbox is emptied. A row whose lease was lost
-- meanwhile (the worker paused past it) is dropped.
local function take_inbox(prefix, worker_id, width)
  local inbox = prefix .. '{{INBOX}}' .. worker_id
  local rows = {}
  for _, text in ipairs(repaired('LRANGE', inbox, 0, -1)) do
    local ok, row = pcall(cjson.decode, text)
    local id, token = ok and row[width + 1], ok and row[width + 2]
    if id then
      local now_held = redis.pcall('HMGET', prefix .. '{{TASK}}' .. id, 'owner', 'status')
      if not now_held.err and now_held[1] == token and now_held[2] == 'RUNNING' then
        rows[#rows + 1] = row
      end
    end
  end
  redis.call('DEL', inbox)
  return rows
end
-- Parked workers whose `till` passed (stopped or dead without unparking): forgotten.
local function sweep_parking(prefix, now)
  local all = repaired('HGETALL', prefix .. '{{PARKING}}')
  for i = 1, #all, 2 do
    local ok, info = pcall(cjson.decode, all[i + 1])
    if not ok or type(info) ~= 'table' or (tonumber(info[4]) or 0) <= now then
      if ok and type(info) == 'table' and type(info[1]) == 'table' then
        for _, set in ipairs(parked_sets(prefix, info[1])) do repaired('ZREM', set, all[i]) end
      end
      redis.call('HDEL', prefix .. '{{PARKING}}', all[i])
    end
  end
end
