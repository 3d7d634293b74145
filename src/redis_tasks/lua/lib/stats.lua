--- @include "lib/repair"
-- Event counters of the backend instance (for metrics): one hash, never expiring.
local function tally(prefix, event, n)
  repaired('HINCRBY', prefix .. '{{STATS}}', event, n or 1)
end
