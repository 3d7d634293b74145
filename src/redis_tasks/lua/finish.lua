-- Stores the outcomes of several tasks (the finishes a worker made at about the same time).
-- KEYS: running
-- ARGV: prefix, result_ttl|'', count, then per task: id, token, status, return_json|'',
--       error_json|''
-- Returns per task finished_at (ms), or 0 when the caller no longer owns it (a stale finish).
-- The same finish sent again (its reply was lost) is answered alike: the lease token is the
-- attempt's number, which the task keeps.
--- @include "lib/clock"
--- @include "lib/json"
--- @include "lib/unique"
--- @include "lib/stats"
--- @include "lib/attempts"
--- @include "lib/limits"
--- @include "lib/workflow"
--- @include "lib/notify"
local now = clock_ms()
local now_text = string.format('%d', now)  -- written per task: turned into text once
local prefix, result_ttl, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out, done = {}, {SUCCESSFUL = {}, FAILED = {}}
local succeeded, failed = 0, 0
for t = 0, count - 1 do
  local status = ARGV[6 + t * 5]
  if not done[status] then return redis.error_reply('ERR bad status ' .. tostring(status)) end
end
local finished = {}
for t = 0, count - 1 do
  local f = 4 + t * 5
  local id, token, status = ARGV[f], ARGV[f + 1], ARGV[f + 2]
  local key = prefix .. '{{TASK}}' .. id
  local held = redis.pcall('HMGET', key, 'owner', 'status', 'workers', 'unique', 'errors',
                          'finished_at', 'slots', 'cancel', 'wf')
  if held.err then
    out[t + 1] = 0  -- not a hash any more: rejected, nothing changed
  elseif held[1] ~= token then
    -- Not ours: rejected, nothing changed; unless this very finish was stored before (a send
    -- repeated after a lost reply), whose time is the answer again.
    out[t + 1] = settled_by(held, token) and held[2] == status and tonumber(held[6]) or 0
  else
    if held[4] then release_unique(prefix, key, held[4]) end
    if held[7] then release_slots(prefix, key, id) end
    local return_json, error = ARGV[f + 3], ARGV[f + 4]
    if held[8] then  -- an operator cancelled it while it ran: cancelled, whatever it returned
      status, return_json = 'FAILED', ''
      if string.sub(error, 1, 42) ~= '["redis_tasks.exceptions.TaskCancelled",' then
        error = error_json('redis_tasks.exceptions.TaskCancelled',
          'redis_tasks.exceptions.TaskCancelled: cancelled by an operator while it ran')
      end
    end
    -- What only a waiting or running task needs goes, so a kept result takes less memory.
    redis.call('HDEL', key, 'owner', 'score', 'expires_at', 'cancel')
    local fields = {'status', status, 'finished_at', now_text}
    if return_json ~= '' then
      fields[#fields + 1], fields[#fields + 2] = 'return', return_json
    end
    if error ~= '' then
      fields[#fields + 1], fields[#fields + 2] = 'errors', json_append(held[5], error)
    end
    redis.call('HSET', key, unpack(fields))
    if result_ttl then redis.call('EXPIRE', key, result_ttl) end
    local index = done[status]
    index[#index + 1], index[#index + 2] = now_text, id
    finished[#finished + 1] = id
    if held[9] then workflow_outcome(prefix, key, id, held[9], status, return_json, now) end
    notify_waiters(prefix, id)
    if status == 'SUCCESSFUL' then succeeded = succeeded + 1 else failed = failed + 1 end
    out[t + 1] = now
  end
end
if #finished > 0 then redis.call('ZREM', KEYS[1], unpack(finished)) end
for status, entries in pairs(done) do
  if #entries > 0 then repaired('ZADD', prefix .. '{{DONE}}' .. status, unpack(entries)) end
end
if succeeded > 0 then tally(prefix, 'succeeded', succeeded, now) end
if failed > 0 then tally(prefix, 'failed', failed, now) end
return out
