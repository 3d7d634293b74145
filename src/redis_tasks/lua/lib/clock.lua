-- Milliseconds on the Redis server's clock: the one clock every worker and client agrees on.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
