--- @include "lib/repair"
--- @include "lib/checks"
-- A unique key names the id of the task holding it; it is released only by that task.
local function release_unique(prefix, key, unique)
  unique = unique or redis.call('HGET', key, 'unique')
  if unique then
    local ukey = prefix .. '{{UNIQUE}}' .. unique
    if usable(ukey, 'string')
       and redis.call('GET', ukey) == string.sub(key, #prefix + #'{{TASK}}' + 1) then
      redis.call('DEL', ukey)
    end
  end
end
-- Whether a task really is queued (ready or deferred) or running: its status says so and it
-- sits in the matching set. A unique key held by anything else no longer counts.
local function is_waiting_or_running(prefix, id)
  local key = prefix .. '{{TASK}}' .. id
  if not is_hash(key) then return false end
  local f = redis.call('HMGET', key, 'status', 'queue')
  if f[1] == 'RUNNING' then
    return redis.call('ZSCORE', prefix .. '{{RUNNING}}', id) ~= false
  end
  if f[1] ~= 'READY' or not f[2] then return false end
  for _, name in ipairs({prefix .. '{{READY}}' .. f[2], prefix .. '{{DEFERRED}}' .. f[2]}) do
    if redis.call('TYPE', name)['ok'] == 'zset' and redis.call('ZSCORE', name, id) then
      return true
    end
  end
  return false
end
