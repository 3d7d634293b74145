--- @include "lib/json"
--- @include "lib/attempts"
-- Leasing a task to a worker: what a claim (claim/take.lua) and a hand-off at enqueue
-- (lib/handoff.lua) write alike, so that a task handed over is owned exactly as a claimed one.
-- `f` is the task's CLAIM_FIELDS as read (`F`: name -> index, `width`: how many); it is changed
-- in place into what the hash holds after the write, with the id and the token after the
-- fields, so the worker gets its row without a second read. Returns the fields to HSET (the
-- caller may add its own).
-- The lease token is the attempt's number: unique to this attempt of this task (every lease
-- appends to `workers`), and kept in the task after it ends, at no cost.
local function lease_fields(f, F, width, id, worker_json, now_text)
  local token = tostring(starts_in(f[F.workers]) + 1)
  local workers = json_append(f[F.workers], worker_json)
  -- The first attempt's start is `started_at` alone (readers take it for `last_attempted_at`
  -- too), which keeps a result's hash smaller.
  local start = f[F.started_at] and 'last_attempted_at' or 'started_at'
  local fields = {'status', 'RUNNING', 'owner', token, start, now_text, 'workers', workers}
  -- Dispatched: the `ttl` deadline no longer applies (a retry or a recovery from a lost lease
  -- must not expire on the old one); blanked in the same write.
  if f[F.expires_at] then fields[#fields + 1], fields[#fields + 2] = 'expires_at', '' end
  f[F.status], f[F.workers], f[F[start]], f[F.expires_at] = 'RUNNING', workers, now_text, false
  f[width + 1], f[width + 2] = id, token
  return fields
end
