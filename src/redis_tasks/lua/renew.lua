-- Extends the leases still owned; returns the ids whose lease was lost. A task whose outcome
-- this very lease stored is not lost: the reply of that finish or requeue was still on its way
-- when the renewal was sent.
-- KEYS: running
-- ARGV: prefix, lease_ms, id, token, id, token, ...
--- @include "lib/clock"
--- @include "lib/checks"
--- @include "lib/attempts"
local now = clock_ms()
local prefix = ARGV[1]
local deadline = now + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = prefix .. '{{TASK}}' .. id
  local f = is_hash(key) and redis.call('HMGET', key, 'owner', 'status', 'workers')
  if f and f[1] == token then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  elseif not (f and settled_by(f, token)) then
    lost[#lost + 1] = id
  end
end
return lost
