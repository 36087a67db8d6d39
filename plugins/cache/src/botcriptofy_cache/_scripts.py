"""Lua scripts: each cache write is one atomic round trip (value, tag sets, stream entry, invalidation message).

Tag sets hold the Redis keys of their entries and live at least as long as the longest-lived of
them, so invalidating a tag never scans the keyspace. The scripts touch keys named in tag sets
without declaring them, which standalone Redis (and Sentinel) allow and Redis Cluster does not.
"""

from __future__ import annotations

_TAG = """
local function tag_entry(tag_key, member, ttl)
  local existed = redis.call('EXISTS', tag_key)
  redis.call('SADD', tag_key, member)
  if ttl > 0 then
    local current = redis.call('PTTL', tag_key)
    if existed == 0 or (current >= 0 and current < ttl) then
      redis.call('PEXPIRE', tag_key, ttl)
    end
  else
    redis.call('PERSIST', tag_key)
  end
end

local function store(first_tag)
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  for i = first_tag, #KEYS do
    tag_entry(KEYS[i], KEYS[1], ttl)
  end
end
"""

# KEYS: value, lock, tag sets...   ARGV: payload, ttl ms (0 = none), channel, message, lock token ('' = none)
SET = _TAG + """
store(3)
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# KEYS: value, stream, tag sets...   ARGV: payload, ttl ms, channel, message, key, tenant
WRITE_BEHIND = _TAG + """
store(3)
local id = redis.call('XADD', KEYS[2], '*', 'k', ARGV[5], 't', ARGV[6], 'p', ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return id
"""

# KEYS: value, lock   ARGV: token, lock ms  ->  {1, payload} | {2} (lock taken) | {0} (someone else loads)
GET_OR_LOCK = """
local value = redis.call('GET', KEYS[1])
if value then
  return {1, value}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {0}
"""

# KEYS: lock   ARGV: token
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: tag set   ARGV: batch size  ->  entries removed in this call (call again while it returns the batch size)
INVALIDATE_TAG = """
local members = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
if #members > 0 then
  redis.call('UNLINK', unpack(members))
end
return #members
"""
