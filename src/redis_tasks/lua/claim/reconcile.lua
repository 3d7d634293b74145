-- Part of claim.lua (it uses the claim's locals).
-- The index checked against `queues`: a queue written without it (by an older version, by
-- hand) is found, and a queue left empty is forgotten.
local function reconcile()
  local names = repaired('SMEMBERS', KEYS[3])
  for i = 1, #names do
    local queue = names[i]
    local r = repaired('ZRANGE', ready_of(queue), 0, 0, 'WITHSCORES')
    local d = repaired('ZRANGE', deferred_of(queue), 0, 0, 'WITHSCORES')
    if r[2] then index_ready(HEADS, queue, tonumber(r[2])) end
    if d[2] then index_due(DUE, queue, tonumber(d[2])) end
    if not r[2] and not d[2] then repaired('SREM', KEYS[3], queue) end
  end
end

