--- @include "lib/json"
--- @include "lib/unique"
--- @include "lib/index"
--- @include "lib/stats"
--- @include "lib/limits"
--- @include "lib/workflow"
--- @include "lib/notify"
-- A task that never ran to an outcome of its own (expired, lost too often, cancelled) ends
-- FAILED with one error recorded for it.
local function finish_failed(prefix, key, now, class_path, message, result_ttl)
  release_unique(prefix, key)
  release_slots(prefix, key, string.sub(key, #prefix + #'{{TASK}}' + 1))
  local errors = redis.call('HGET', key, 'errors')
  redis.call('HSET', key, 'status', 'FAILED', 'finished_at', now,
             'errors', json_append(errors, error_json(class_path, message)))
  redis.call('HDEL', key, 'owner')
  if result_ttl then redis.call('EXPIRE', key, result_ttl) end
  index_done(prefix, key, 'FAILED', now)
  tally(prefix, 'failed', 1, now)
  local id = string.sub(key, #prefix + #'{{TASK}}' + 1)
  local wf = redis.call('HGET', key, 'wf')
  if wf then workflow_outcome(prefix, key, id, wf, 'FAILED', nil, now) end
  notify_waiters(prefix, id)
end
