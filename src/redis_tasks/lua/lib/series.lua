--- @include "lib/repair"
-- The last hour of a backend instance, per minute, for the dashboard's charts (series.py reads
-- it). Fields are '<minute>:<name>' (minute: Unix ms // 60000, Redis clock) holding a count
-- (started, succeeded, failed: lib/stats.lua) or a sample (waiting, running: sample.lua), in
-- two hashes, so the dashboard reads the hour in two HGETALLs:
-- * `minute`: the counts of the current minute, a few fields. Claims and finishes add to it on
--   their hot path, where a HINCRBY on a hash of a few fields costs a microsecond (on the
--   hour's 300-field listpack it cost ten: measured on Redis 7.0).
-- * `series`: the minutes before, and the depth samples. The write that opens a minute moves
--   the older counts of `minute` here and drops the fields older than SERIES_MINUTES, so it
--   never holds more than SERIES_MINUTES minutes. Both expire an hour after the last write
--   that opened a minute.
local SERIES_MINUTES = {{SERIES_MINUTES}}
local SERIES_TTL = (SERIES_MINUTES + 1) * 60
local function series_minute_of(field)
  return tonumber(string.match(field, '^(%d+):'))
end
-- Drops the fields of `key` (the series) older than the window ending with `minute`.
local function series_trim(key, minute)
  local old = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    local at = series_minute_of(field)
    if not at or at <= minute - SERIES_MINUTES then old[#old + 1] = field end
  end
  for first = 1, #old, 1000 do  -- unpack stays far below Lua's stack limit
    redis.call('HDEL', key, unpack(old, first, math.min(first + 999, #old)))
  end
  redis.call('EXPIRE', key, SERIES_TTL)
end
-- Moves the counts of other minutes than `minute` from the current minute's hash to the series.
local function series_fold(prefix, minute)
  local current, key = prefix .. '{{MINUTE}}', prefix .. '{{SERIES}}'
  local fields = redis.call('HGETALL', current)
  local moved = {}
  for i = 1, #fields, 2 do
    local at = series_minute_of(fields[i])
    if at ~= minute then
      if at then repaired('HINCRBY', key, fields[i], tonumber(fields[i + 1]) or 0) end
      moved[#moved + 1] = fields[i]
    end
  end
  if #moved > 0 then
    redis.call('HDEL', current, unpack(moved))
    series_trim(key, minute)
  end
  redis.call('EXPIRE', current, SERIES_TTL)
end
-- Adds `n` to the count `name` of the minute of `now` (ms): one HINCRBY on a small hash; the
-- fold only when that opens the minute for this name.
local function series_add(prefix, now, name, n)
  local minute = math.floor(now / 60000)
  if repaired('HINCRBY', prefix .. '{{MINUTE}}', minute .. ':' .. name, n) == n then
    series_fold(prefix, minute)
  end
end
