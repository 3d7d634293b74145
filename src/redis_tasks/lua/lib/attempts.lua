-- Starts of a task: the worker ids in its JSON array (ids never contain '","').
local function starts_of(key)
  local workers = redis.call('HGET', key, 'workers')
  if not workers or workers == '[]' then return 0 end
  local _, commas = string.gsub(workers, '","', '')
  return commas + 1
end
-- Attempts that count against max_attempts: starts, less hand-backs and operator retries.
local function attempts_of(key)
  return starts_of(key) - (tonumber(redis.call('HGET', key, 'uncounted')) or 0)
end
