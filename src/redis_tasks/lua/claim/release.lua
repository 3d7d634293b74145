-- Part of claim.lua (it uses the claim's locals).
-- Tasks a rate limit held back go back to their ready sets once their window has room: as many
-- as it has room for (at most what this claim can take), at their places. Returns when the
-- next window opens (nil: none holds tasks back), so an idle worker waits until then.
local function release_due(need)
  local key = prefix .. '{{HELD_DUE}}'
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 100)
  for _, member in ipairs(due) do
    local group, count, period = string.match(member, '^(.*)|(%d+)|(%d+)$')
    local limit = {'r', group, tonumber(count), tonumber(period)}
    local held = held_key(prefix, limit)
    local room = limit[3] - repaired('ZCARD', window_of(prefix, limit, now))
    local moved = room > 0 and release_held(prefix, held, math.min(room, need)) or 0
    if repaired('ZCARD', held) == 0 then
      redis.call('ZREM', key, member)
    elseif moved < room then  -- more room than this claim could take: the next claim's turn
      redis.call('ZADD', key, now, member)
    else  -- the window fills as these start: it opens again when its oldest start ends
      redis.call('ZADD', key, window_opens(prefix, limit, now), member)
    end
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2])
end
