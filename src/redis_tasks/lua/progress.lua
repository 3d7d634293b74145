-- A running task's progress (progress.py): stored in its hash, never creating one (a task whose
-- result expired or was purged meanwhile gets nothing).
-- KEYS: task
-- ARGV: the progress (JSON)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
return 1
