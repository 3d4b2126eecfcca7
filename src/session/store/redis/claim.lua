local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'zset' then
  if kind == 'none' then return {{}, 0} end
  redis.call('DEL', KEYS[1])
  return {{}, 1}
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
local bad = 0
for _, id in ipairs(ids) do
  local score = redis.call('ZSCORE', KEYS[1], id)
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. 'session:' .. id
  local rec = {false}
  local rkind = redis.call('TYPE', key).ok
  if rkind == 'hash' then
    rec = redis.call('HMGET', key, 'upstream_session_id', 'upstream', 'protocol_version', 'created_ms', 'route')
  elseif rkind ~= 'none' then
    bad = bad + 1
  end
  redis.call('DEL', key, ARGV[3] .. 'streams:' .. id)
  if rec[1] then
    table.insert(out, {id, rec[1], rec[2] or '', rec[3] or '', rec[4] or '0', score or '0', rec[5] or ''})
  end
end
return {out, bad}
