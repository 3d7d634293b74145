-- Starts of a task: the worker ids in its JSON array (ids never contain '","'). The number
-- of the latest start is also the token of its lease (see claim/take.lua).
local function starts_in(workers)
  if not workers or workers == '' or workers == '[]' then return 0 end
  local _, commas = string.gsub(workers, '","', '')
  return commas + 1
end
local function starts_of(key)
  return starts_in(redis.call('HGET', key, 'workers'))
end
-- Whether a task's lease `token` was its latest attempt's and that attempt's outcome (or
-- requeue) was stored: `held` is the task's {owner, status, workers}.
local function settled_by(held, token)
  return not held[1] and held[2] ~= 'RUNNING' and tostring(starts_in(held[3])) == token
end
-- Attempts that count against max_attempts: starts, less hand-backs and operator retries.
local function attempts_of(key)
  return starts_of(key) - (tonumber(redis.call('HGET', key, 'uncounted')) or 0)
end
