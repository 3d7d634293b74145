-- Part of claim.lua (it uses the claim's locals `out` and `claimed`).
-- 4. Claim the best tasks across the served queues: lowest score = highest priority, then FIFO.
--    Queues are read in the order of their index bounds, and reading stops once the tasks in
--    hand beat the next queue's bound: a claim reads about as many queues as it takes tasks.
--    What is taken leaves its ready set in one ZREM per queue and enters the lease set in one
--    ZADD; the index entries of the queues read are then set to their true heads.
-- Whether a limit holds the candidate back (then it is held: see lib/limits.lua); its limits
-- are left in `task_limits` for the take.
local task_limits = {}
local function limited(id, key, queue, score, f)
  task_limits = limits_of(f[F.limits], queue, queue_limits)
  if #task_limits == 0 then return false end
  local limit = blocking(prefix, task_limits, now)
  if not limit then return false end
  hold(prefix, key, id, queue, score, limit, now)
  return true
end

local function claim_round()
  local need = max_count - claimed
  local order, page_from, exhausted = {}, 0, false
  if #named > 0 then order, exhausted = scores_of(HEADS), true end
  local at = 0
  local function next_queue()
    repeat
      at = at + 1
      if order[at] == nil and not exhausted then
        local page = repaired('ZRANGE', HEADS, page_from, page_from + need + 7, 'WITHSCORES')
        page_from = page_from + need + 8
        exhausted = #page < 2 * (need + 8)
        for i = 1, #page, 2 do order[#order + 1] = {page[i], tonumber(page[i + 1])} end
      end
    until order[at] == nil or not paused[order[at][1]]
    return order[at]
  end
  local cand, heads_read, read_order = {}, {}, {}
  while true do
    local entry = next_queue()
    if entry == nil or (#cand >= need and cand[need][1] <= entry[2]) then break end
    local queue = entry[1]
    if not heads_read[queue] then
      -- One more than can be taken: the first left behind is the queue's new head.
      local heads = repaired('ZRANGE', ready_of(queue), 0, need, 'WITHSCORES')
      heads_read[queue] = heads
      read_order[#read_order + 1] = queue
      for i = 1, #heads, 2 do cand[#cand + 1] = {tonumber(heads[i + 1]), heads[i], queue} end
      -- A single queue's heads come in order already; the heads of several are merged.
      if #read_order > 1 then table.sort(cand, function(a, b) return a[1] < b[1] end) end
      for i = #cand, need + 1, -1 do cand[i] = nil end
    end
  end
  local taken, leases, started, again = {}, {}, {}, false
  for c = 1, #cand do
    local id, queue = cand[c][2], cand[c][3]
    taken[queue] = taken[queue] or {}
    table.insert(taken[queue], id)
    local key = prefix .. '{{TASK}}' .. id
    -- One read of what the worker needs; the reply is that read with this claim's own
    -- changes applied, so the hash is not read a second time.
    local f = valid_id(id) and redis.pcall('HMGET', key, unpack(CLAIM_FIELDS))
    if not f or f.err or not f[F.status] then
      dead(id)
      again = true  -- an entry that was not a task took a place: look again for real ones
    elseif f[F.expires_at] and (tonumber(f[F.expires_at]) or now + 1) <= now then
      repaired('ZREM', KEYS[2], id)  -- past its dispatch deadline: it fails, never runs
      expire_waiting(id, key)
      again = true
    elseif limited(id, key, queue, cand[c][1], f) then
      again = true  -- held back: look again for tasks that may run
    else
      claimed = claimed + 1
      local fields = lease_fields(f, F, #CLAIM_FIELDS, id, worker_json, now_text)
      if #task_limits > 0 then
        local slots = take_limits(prefix, id, f[#CLAIM_FIELDS + 2], task_limits, now)
        if slots ~= '' then fields[#fields + 1], fields[#fields + 2] = 'slots', slots end
      end
      redis.call('HSET', key, unpack(fields))
      leases[#leases + 1], leases[#leases + 2] = deadline_text, id
      started[#started + 1] = id
      out[#out + 1] = f
    end
  end
  for _, queue in ipairs(read_order) do
    local ready, heads, ids = ready_of(queue), heads_read[queue], taken[queue] or {}
    if #ids > 0 then redis.call('ZREM', ready, unpack(ids)) end
    -- The first one read and not taken; none: the read reached the end of the queue (it
    -- read one more than could be taken).
    local head = heads[2 * #ids + 2]
    if head then
      redis.call('ZADD', HEADS, head, queue)
    else
      redis.call('ZREM', HEADS, queue)
      forget_if_empty(queue)
    end
  end
  if #started > 0 then
    repaired('ZADD', KEYS[1], unpack(leases))
    repaired('ZREM', KEYS[2], unpack(started))
  end
  return again
end
