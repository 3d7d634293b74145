--- @include "lib/clock"
-- What is moved aside (dead-lettered ids, corrupt keys) is kept a week for an operator.
local KEEP_ASIDE_MS = {{KEEP_ASIDE_MS}}
-- Keys of a wrong type (written by something else) are renamed aside, never fatal: a worker
-- must not stall on garbage. The new names are reported to the caller, which logs them.
local quarantined = {}
local function quarantine(key, now)
  local aside = key .. ':corrupt:' .. (now or clock_ms())
  redis.call('RENAME', key, aside)
  redis.call('PEXPIRE', aside, KEEP_ASIDE_MS)
  quarantined[#quarantined + 1] = aside
end
-- Checks a key's type before a step that must not fail halfway. A key found usable is not
-- checked again in the same script: only this script writes now.
local checked = {}
local function usable(key, wanted, now)
  if checked[key] == wanted then return true end
  local actual = redis.call('TYPE', key)['ok']
  if actual == 'none' or actual == wanted then
    checked[key] = wanted
    return true
  end
  quarantine(key, now)
  return false
end
-- One command on a key, with no TYPE call first: a command refused for the key's type changes
-- nothing, so the key can be moved aside then and the command run again on the free name.
local function repaired(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then quarantine(key) end
    return redis.call(command, key, ...)  -- any other error is raised as it is
  end
  return reply
end
