-- Samples a backend instance's depth into the series (lib/series.lua) once per minute, however
-- many workers ask: the tasks waiting (lib/depth.lua) and the tasks running. Workers ask from
-- their heartbeat, about once a minute each.
-- KEYS: series, queues, running
-- ARGV: prefix
-- Returns {now (ms), 1 when this call took the minute's sample, else 0}
--- @include "lib/clock"
--- @include "lib/repair"
--- @include "lib/series"
--- @include "lib/depth"
local now = clock_ms()
local minute = math.floor(now / 60000)
local field = minute .. ':waiting'
if repaired('HEXISTS', KEYS[1], field) == 1 then return {now, 0} end
local waiting = waiting_tasks(ARGV[1], KEYS[2])
local running = repaired('ZCARD', KEYS[3])
redis.call('HSET', KEYS[1], field, waiting, minute .. ':running', running)
series_trim(KEYS[1], minute)
return {now, 1}
