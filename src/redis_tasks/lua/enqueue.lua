-- Queue tasks, all or none, in one step (see lib/enqueue_batch.lua for the reply).
-- KEYS: queues, sequence, expiry, wake, heads, due
-- ARGV: prefix, then the batch from ARGV[2].
--- @include "lib/enqueue_batch"
return enqueue_batch(ARGV[1], 2, clock_ms(), true)
