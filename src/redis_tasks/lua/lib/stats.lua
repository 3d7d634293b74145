--- @include "lib/repair"
--- @include "lib/series"
-- The events the dashboard charts per minute (series.py reads them back).
local CHARTED = {started = true, succeeded = true, failed = true}
-- Event counters of the backend instance (for metrics): one hash, never expiring. A charted
-- event is also counted in its minute of the series, which needs `now` (ms, Redis clock): the
-- callers batch their tallies (`n`), so this is one more command per script run, not per task.
local function tally(prefix, event, n, now)
  n = n or 1
  repaired('HINCRBY', prefix .. '{{STATS}}', event, n)
  if CHARTED[event] then series_add(prefix, now, event, n) end
end
