-- Deletes finished results older than the cutoff, a batch at a time, but only those still
-- finished (an operator may have retried one since). Returns how many ids were handled.
-- KEYS: done index (of one status)
-- ARGV: prefix, cutoff_ms, batch size
--- @include "lib/checks"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for i = 1, #ids do
  local key = ARGV[1] .. '{{TASK}}' .. ids[i]
  local status = is_hash(key) and redis.call('HGET', key, 'status')
  if status == 'SUCCESSFUL' or status == 'FAILED' or not status then
    redis.call('DEL', key)
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[1], ids[i])
end
return {#ids, deleted}
