-- Queue a workflow (workflows.py): its record and its first tasks (a chain's first step, or a
-- group's or chord's members), all or none, in one step. See lib/workflow.lua for the record and
-- how the finish script advances it.
-- KEYS: queues, sequence, expiry, wake, heads, due, workflow
-- ARGV: prefix, the record (JSON object of its fields), then the batch (see
--       lib/enqueue_batch.lua) from ARGV[3].
-- Returns the batch's reply (the same call sent again after a lost reply gets it again: the
-- record is not written twice). A member that an identical unique task stands for is linked to
-- that task: it counts for the workflow when that task ends, and takes its place in `ids`.
--- @include "lib/enqueue_batch"
local now = clock_ms()
local record = cjson.decode(ARGV[2])
local replay = redis.call('EXISTS', KEYS[7]) == 1
local reply = enqueue_batch(ARGV[1], 3, now)
if reply[1] ~= 1 or replay then return reply end
local ids, linked = cjson.decode(record.ids), false
for t = 3, #reply do  -- members an identical unique task stands for: linked to it
  local holder = reply[t]
  local own = ARGV[3 + 4 + (t - 3) * TASK_FIELDS]
  if holder ~= '' and holder ~= own then
    local key = ARGV[1] .. '{{TASK}}' .. holder
    local link = ARGV[3 + 4 + (t - 3) * TASK_FIELDS + 11]
    local links = redis.call('HGET', key, 'wf')
    redis.call('HSET', key, 'wf', links and (links .. ';' .. link) or link)
    ids[t - 2], linked = holder, true
  end
end
if linked then record.ids = cjson.encode(ids) end
local fields = {}
for name, value in pairs(record) do fields[#fields + 1], fields[#fields + 2] = name, value end
redis.call('HSET', KEYS[7], unpack(fields))
return reply
