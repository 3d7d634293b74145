local function is_hash(key)
  return redis.call('TYPE', key)['ok'] == 'hash'
end
local function valid_id(id)
  return #id <= 128 and string.match(id, '^[%w_%-]+$') ~= nil
end
