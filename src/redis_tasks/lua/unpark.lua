-- A stopping worker leaves the parked list (lib/parking.lua), so that no enqueue hands it a
-- task any more, and takes back what was handed to it meanwhile.
-- ARGV: prefix, worker_id, how many fields a claim row has
-- Returns the rows of the tasks handed to it and still leased to it (as the claim returns
-- them), which the worker hands back to their queues.
--- @include "lib/parking"
unpark(ARGV[1], ARGV[2])
return take_inbox(ARGV[1], ARGV[2], tonumber(ARGV[3]))
