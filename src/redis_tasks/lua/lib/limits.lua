--- @include "lib/repair"
--- @include "lib/index"
-- Flow control (limits.py, docs/flow-control.md). A limit applies to a group: 't:<path>' or
-- 't:<path>:<value>' (a task's own, written in its hash at enqueue as `limits`:
-- 'r|<group>|<count>|<period_ms>' and/or 'c|<group>|<max>', joined by ';') or 'q:<queue>' (a
-- queue's, from the claim's ARGV).
--
-- Concurrency: the ids holding a slot of a group are in the set `cslots:<group>`; a task lists
-- the groups it holds slots of in its hash (`slots`), and gives them back wherever it leaves
-- RUNNING (finish, requeue, a lost lease).
-- Rate: the starts of the last period are in the sorted set `rstarts:<group>`, a sliding window:
-- at most <count> starts in any <period_ms>.
-- A task a limit holds back leaves its ready set for `held:<kind>:<group>`, at its ready score,
-- so the tasks behind it flow on and no claim reads it again for nothing; its hash names that
-- set (`held`), and `held_n` counts held tasks per queue (maxsize counts them). It goes back to
-- its ready set, at its place, when a slot of the group is given back (concurrency) or when the
-- window has room again (rate: `held_due` holds '<group>|<count>|<period_ms>' -> that time).

local function split(text, sep)
  local parts = {}
  for part in string.gmatch(text, '[^' .. sep .. ']+') do parts[#parts + 1] = part end
  return parts
end

-- The limits of a task: {kind, group, count or max, period_ms}, its own then its queue's.
local function limits_of(task_limits, queue, queue_limits)
  local list = {}
  if task_limits and task_limits ~= '' then
    for _, part in ipairs(split(task_limits, ';')) do
      local p = split(part, '|')
      list[#list + 1] = {p[1], p[2], tonumber(p[3]), tonumber(p[4])}
    end
  end
  local q = queue_limits and queue_limits[queue]
  if q then
    if q.r and q.r ~= '' then
      local p = split(q.r, '|')
      list[#list + 1] = {'r', 'q:' .. queue, tonumber(p[1]), tonumber(p[2])}
    end
    if q.c and q.c ~= '' then list[#list + 1] = {'c', 'q:' .. queue, tonumber(q.c)} end
  end
  return list
end

local function window_of(prefix, limit, now)
  local key = prefix .. '{{RSTARTS}}' .. limit[2]
  repaired('ZREMRANGEBYSCORE', key, '-inf', now - limit[4])
  return key
end

-- The first limit that holds the task back now, or nil.
local function blocking(prefix, limits, now)
  for _, limit in ipairs(limits) do
    if limit[1] == 'c' then
      if repaired('SCARD', prefix .. '{{CSLOTS}}' .. limit[2]) >= limit[3] then return limit end
    elseif repaired('ZCARD', window_of(prefix, limit, now)) >= limit[3] then
      return limit
    end
  end
  return nil
end

-- The task starts: it takes a slot of each concurrency group and a place in each window.
-- Returns the groups it holds slots of ('' for none), for its hash.
local function take_limits(prefix, id, token, limits, now)
  local slots = {}
  for _, limit in ipairs(limits) do
    if limit[1] == 'c' then
      redis.call('SADD', prefix .. '{{CSLOTS}}' .. limit[2], id)
      slots[#slots + 1] = limit[2]
    else
      local key = prefix .. '{{RSTARTS}}' .. limit[2]
      redis.call('ZADD', key, now, id .. ':' .. token)
      redis.call('PEXPIRE', key, limit[4])
    end
  end
  return table.concat(slots, ';')
end

local function held_key(prefix, limit)
  return prefix .. '{{HELD}}' .. limit[1] .. ':' .. limit[2]
end

-- When a full window has room again: its oldest start's end.
local function window_opens(prefix, limit, now)
  local oldest = redis.call('ZRANGE', window_of(prefix, limit, now), 0, 0, 'WITHSCORES')
  return (tonumber(oldest[2]) or now) + limit[4]
end

-- Hold the task back (it was read from its ready set at `score`; the caller takes it out).
local function hold(prefix, key, id, queue, score, limit, now)
  local held = held_key(prefix, limit)
  redis.call('ZADD', held, score, id)
  redis.call('HSET', key, 'held', held)
  repaired('HINCRBY', prefix .. '{{HELD_N}}', queue, 1)
  if limit[1] == 'r' then
    local member = limit[2] .. '|' .. limit[3] .. '|' .. limit[4]
    redis.call('ZADD', prefix .. '{{HELD_DUE}}', window_opens(prefix, limit, now), member)
  end
end

-- Up to `n` held tasks of a held set back to their ready sets, at their places.
local function release_held(prefix, held, n)
  local popped = redis.call('ZPOPMIN', held, n)
  for i = 1, #popped, 2 do
    local id, score = popped[i], popped[i + 1]
    local key = prefix .. '{{TASK}}' .. id
    local queue = redis.call('HGET', key, 'queue')
    if queue then
      redis.call('HDEL', key, 'held')
      repaired('HINCRBY', prefix .. '{{HELD_N}}', queue, -1)
      repaired('ZADD', prefix .. '{{READY}}' .. queue, score, id)
      repaired('SADD', prefix .. '{{QUEUES}}', queue)
      index_ready(prefix .. '{{HEADS}}', queue, tonumber(score))
    end
  end
  if #popped > 0 then wake(prefix .. '{{WAKE}}') end
  return #popped / 2
end

-- The task leaves RUNNING: its concurrency slots go back, and for each a task held by that
-- group (the best) returns to its ready set.
local function release_slots(prefix, key, id)
  local slots = redis.call('HGET', key, 'slots')
  if not slots or slots == '' then return end
  for _, group in ipairs(split(slots, ';')) do
    if redis.call('SREM', prefix .. '{{CSLOTS}}' .. group, id) == 1 then
      release_held(prefix, prefix .. '{{HELD}}' .. 'c:' .. group, 1)
    end
  end
  redis.call('HDEL', key, 'slots')
end

-- A held task leaves its held set some other way (cancelled, expired): 1 if it was held.
local function unhold(prefix, key, id, queue)
  local held = redis.call('HGET', key, 'held')
  if not held then return 0 end
  redis.call('HDEL', key, 'held')
  local removed = redis.call('ZREM', held, id)
  if removed == 1 then repaired('HINCRBY', prefix .. '{{HELD_N}}', queue, -1) end
  return removed
end
