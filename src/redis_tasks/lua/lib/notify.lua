-- Waiting for a result without polling (waiting.py): each waiter counts itself in
-- `waiting:<id>` (with an expiry) before it looks at the task; the script that stores the
-- task's final outcome pushes one token per waiter on `notify:<id>` for them to wake on, and
-- nothing when nobody waits.
local function notify_waiters(prefix, id)
  local waiters = tonumber(redis.pcall('GET', prefix .. '{{WAITING}}' .. id)) or 0
  if waiters > 0 then
    local key, tokens = prefix .. '{{NOTIFY}}' .. id, {}
    for i = 1, math.min(waiters, 100) do tokens[i] = '1' end
    redis.call('LPUSH', key, unpack(tokens))
    redis.call('PEXPIRE', key, 60000)
  end
end
