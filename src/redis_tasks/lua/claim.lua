-- Claim up to max_count tasks for a worker, leased to it: one step, whoever else claims.
-- KEYS: running, expiry, queues, dead, wake, workers, heads, due, swept, reconciled
-- ARGV: prefix, worker_id, lease_ms, max_count, max_attempts, result_ttl|'', sweep_ms,
--       reconcile_ms, thorough ('1': both now), the queues' limits (JSON, '' for none: see
--       lib/limits.lua), park_ms|'' (park the worker that long if the queues run dry: see
--       lib/parking.lua), parked ('1': it parked at its last claim), queue names... (none:
--       every queue)
-- Returns {now, next_due|-1, {quarantined key...}, {value of each CLAIM_FIELDS..., id, token}, ...}
-- (next_due: the earliest deferred task's due time, when fewer tasks than asked were claimed)
--
-- What a claim costs does not grow with the number of queues: the index (`heads`, `due`) names
-- the queues worth reading. The parts, in order: the sweeps (claim/sweep.lua) and the check of
-- the index (claim/reconcile.lua), each at most once per period across all workers; due
-- deferred tasks promoted to their ready sets (claim/promote.lua); tasks a rate limit held
-- back returned to their ready sets once their window has room (claim/release.lua); the best
-- ready tasks taken and leased, past the ones a limit holds back and the paused queues
-- (claim/take.lua). A worker that parked at its last claim is unparked first, and a task
-- handed to it meanwhile (lib/handoff.lua) comes with this reply; one that runs dry parks.
--- @include "lib/clock"
--- @include "lib/json"
--- @include "lib/repair"
--- @include "lib/checks"
--- @include "lib/index"
--- @include "lib/stats"
--- @include "lib/finish_failed"
--- @include "lib/attempts"
--- @include "lib/limits"
--- @include "lib/parking"
--- @include "lib/lease"
local now = clock_ms()
local prefix = ARGV[1]
local worker_id = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local max_count = tonumber(ARGV[4])
local max_attempts = tonumber(ARGV[5])
local result_ttl = tonumber(ARGV[6])
local HEADS, DUE = KEYS[7], KEYS[8]
-- Numbers written many times, turned into text once.
local now_text, deadline_text = string.format('%d', now), string.format('%d', now + lease_ms)
local worker_json = cjson.encode(worker_id)
local CLAIM_FIELDS = {{CLAIM_FIELDS}}
local F = {}
for i, name in ipairs(CLAIM_FIELDS) do F[name] = i end
local function dead(id)
  repaired('ZADD', KEYS[4], now, id)
end
local function ready_of(queue) return prefix .. '{{READY}}' .. queue end
local function deferred_of(queue) return prefix .. '{{DEFERRED}}' .. queue end
-- Gates open at most once per period across every worker: each key holds the time its gate
-- opens again (and expires then by itself). Both are read in one call.
local thorough = ARGV[9] == '1'
local gates = redis.call('MGET', KEYS[9], KEYS[10])
local function gate_open(at, key, period_ms)
  if not thorough and (tonumber(gates[at]) or now) > now then return false end
  redis.call('SET', key, now + period_ms, 'PX', period_ms)
  return true
end
-- A queue with neither ready nor deferred tasks is forgotten until its next enqueue or
-- requeue, so `queues` does not grow for ever with names no longer used.
local function forget_if_empty(queue)
  if repaired('ZCARD', ready_of(queue)) == 0 and repaired('ZCARD', deferred_of(queue)) == 0 then
    repaired('SREM', KEYS[3], queue)
    return true
  end
  return false
end
local function expire_waiting(id, key)
  tally(prefix, 'expired')
  finish_failed(prefix, key, now, 'redis_tasks.exceptions.TaskExpired',
    'redis_tasks.exceptions.TaskExpired: not dispatched within the backend ttl', result_ttl)
end

-- The queues served: named ones, or (none named) every queue in the index.
local named = {}
for i = 13, #ARGV do named[#named + 1] = ARGV[i] end
local queue_limits = ARGV[10] ~= '' and cjson.decode(ARGV[10]) or nil
-- Paused queues (`redis_tasks pause`): their tasks wait, none is claimed.
local paused = {}
for _, queue in ipairs(repaired('SMEMBERS', prefix .. '{{PAUSED}}')) do paused[queue] = true end
local function scores_of(index)  -- {queue, bound} of the named queues in the index
  local found = {}
  for first = 1, #named, 1000 do  -- unpack stays far below Lua's stack limit
    local last = math.min(first + 999, #named)
    local scores = repaired('ZMSCORE', index, unpack(named, first, last))
    for i = 1, #scores do
      if scores[i] then found[#found + 1] = {named[first + i - 1], tonumber(scores[i])} end
    end
  end
  table.sort(found, function(a, b) return a[2] < b[2] end)
  return found
end

--- @include "claim/sweep"
--- @include "claim/reconcile"
--- @include "claim/promote"
--- @include "claim/release"
local out = {now, -1, quarantined}
local claimed = 0
--- @include "claim/take"

local handed = 0  -- tasks handed over while it waited (counted as started by the hand-off)
if ARGV[12] == '1' then
  unpark(prefix, worker_id)
  for _, row in ipairs(take_inbox(prefix, worker_id, #CLAIM_FIELDS)) do
    out[#out + 1] = row
    handed = handed + 1
  end
  claimed = handed
end
if gate_open(1, KEYS[9], tonumber(ARGV[7])) then sweep() end
if gate_open(2, KEYS[10], tonumber(ARGV[8])) then reconcile() end

local due_queues, first_due = promote()
local next_release = release_due(max_count)
while claimed < max_count and claim_round() do end

if claimed > handed then tally(prefix, 'started', claimed - handed, now) end
if claimed == 0 then
  -- Tokens left by enqueues this claim has now seen would only wake idle workers for nothing;
  -- an enqueue after this script pushes a fresh one, so no wake-up is lost.
  repaired('DEL', KEYS[5])
end
if claimed < max_count and ARGV[11] ~= '' then
  local limited = {}
  for queue, _ in pairs(queue_limits or {}) do limited[queue] = true end
  park(prefix, worker_id, named, lease_ms, limited, now + tonumber(ARGV[11]), now,
       max_count - claimed)
end
if claimed < max_count then  -- the queues ran dry: the worker waits, at most until this
  local first = first_due
  if #due_queues > 0 then  -- promote() moved tasks: read the earliest due time again
    if #named > 0 then
      first = scores_of(DUE)[1]
      first = first and first[2]
    else
      first = tonumber(repaired('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2])
    end
  end
  if next_release and (not first or next_release < first) then first = next_release end
  if first then out[2] = math.max(first, now) end
end
return out
