"""The one Lua script that evaluates every limit of a request atomically, on Redis's own clock.

Operations (``ARGV[1]``):

``hit``
    ``ARGV = hit, "half_life_us threshold min_factor max_score deny_weight"``, then one string per check:
    ``"kind interval_us capacity cost penalty_key_index"`` (kind ``g`` or ``q``; index 0 = no penalty).
    ``KEYS`` holds the check keys, then the penalty keys the indexes point at. Every check is evaluated
    first; only when all pass are the new states written (all or nothing). A refused GCRA check with a
    penalty key adds ``deny_weight`` to that key's score, unless only the penalty's tightening refused
    it (the untightened limit would have admitted it): a client back under its limit is not kept
    penalised by its own refusals, so its score decays. Returns one string (cheap to send and parse):
    ``"allowed now_us|allowed limit remaining reset_after_us retry_after_us factor_permille crossed|..."``
    with ``retry_after_us`` -1 when the check passed.
``pen``
    ``ARGV = pen, half_life_us, threshold, max_score, weight``: add ``weight`` to the decayed score of
    every key in ``KEYS``. Returns a list of 1/0: whether each score crossed the threshold.
``qadd``
    ``ARGV = qadd, month_id, amount...``: add what a local fallback counted to each quota in ``KEYS``
    when it is still the same calendar month.
``month``
    ``ARGV = month, us``: the month id and month end for a given time (tests the calendar arithmetic).

GCRA state is the theoretical arrival time (TAT) in integer microseconds; a quota is a hash
``{m: month id, n: used}`` that resets itself when the month changes; a penalty is a hash
``{s: score, t: µs}`` whose score halves every ``half_life``.
"""

from __future__ import annotations

import hashlib

SCRIPT = r"""
local op = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local floor = math.floor

local function int(x) return string.format('%.0f', x) end

-- UTC calendar month of a time in µs (Howard Hinnant's civil-from-days), and the µs its next month starts.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m + 9
  if m > 2 then mp = m - 3 end
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function month_window(us)
  local z = floor(us / 86400000000) + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local y = yoe + era * 400
  local m = mp - 9
  if mp < 10 then m = mp + 3 end
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return y * 12 + m - 1, days_from_civil(ny, nm, 1) * 86400000000
end

local function score_of(key, half_life)
  local v = redis.call('HMGET', key, 's', 't')
  local s = tonumber(v[1])
  if not s then return 0 end
  local age = now - tonumber(v[2])
  if age > 0 then s = s * math.pow(0.5, age / half_life) end
  return s
end
local function bump(key, s, add, half_life, threshold, max_score)
  local new = s + add
  if new > max_score then new = max_score end
  redis.call('HSET', key, 's', string.format('%.17g', new), 't', int(now))
  local ttl = 1000
  if new > 0.01 then ttl = math.ceil(half_life * math.log(new / 0.01) / math.log(2) / 1000) + 1000 end
  redis.call('PEXPIRE', key, ttl)
  if s <= threshold and new > threshold then return 1 end
  return 0
end

local function row(allowed, cap, remaining, reset, retry, permille, crossed)
  return allowed .. ' ' .. int(cap) .. ' ' .. int(remaining) .. ' ' .. int(reset) .. ' ' .. int(retry) .. ' ' .. permille .. ' ' .. crossed
end

if op == 'hit' then
  local h, t, m, x, d = string.match(ARGV[2], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  local half_life, threshold, min_factor = tonumber(h), tonumber(t), tonumber(m)
  local max_score, deny_weight = tonumber(x), tonumber(d)
  local ok = 1
  local rows = {}
  local writes = {}
  local month_id, month_end
  for i = 1, #ARGV - 2 do
    local kind, iv, cp, co, pi = string.match(ARGV[i + 2], '^(%a) (%d+) (%d+) (%d+) (%d+)$')
    local interval, cap, cost, pidx = tonumber(iv), tonumber(cp), tonumber(co), tonumber(pi)
    local key = KEYS[i]
    if kind == 'g' then
      local permille = 1000
      if pidx > 0 then
        local s = score_of(KEYS[pidx], half_life)
        if s > threshold then
          local f = threshold / s
          if f < min_factor then f = min_factor end
          interval = floor(interval / f + 0.5)
          cap = floor(cap * f)
          if cap < 1 then cap = 1 end
          permille = floor(f * 1000)
        end
      end
      local tat = tonumber(redis.call('GET', key)) or now
      if tat < now then tat = now end
      local tolerance = interval * cap
      local new_tat = tat + cost * interval
      local diff = now - (new_tat - tolerance)
      if diff < 0 then
        ok = 0
        local retry = -diff
        if cost * interval > tolerance then retry = -1 end
        local remaining = floor((now - (tat - tolerance)) / interval)
        if remaining < 0 then remaining = 0 end
        local crossed = 0
        -- Only a request over the configured limit earns points: one refused merely because of the
        -- tightening adds none, so a client back under its limit sees its score decay and recovers.
        local weight = deny_weight
        if pidx > 0 and weight > 0 and permille < 1000 then
          local base_interval, base_cap = tonumber(iv), tonumber(cp)
          if now - (tat + cost * base_interval - base_interval * base_cap) >= 0 then weight = 0 end
        end
        if pidx > 0 and weight > 0 then
          crossed = bump(KEYS[pidx], score_of(KEYS[pidx], half_life), weight, half_life, threshold, max_score)
        end
        rows[i] = row(0, cap, remaining, tat - now, retry, permille, crossed)
      else
        rows[i] = row(1, cap, floor(diff / interval), new_tat - now, -1, permille, 0)
        writes[#writes + 1] = {1, key, new_tat}
      end
    else
      if not month_id then month_id, month_end = month_window(now) end
      local v = redis.call('HMGET', key, 'm', 'n')
      local used = 0
      if tonumber(v[1]) == month_id then used = tonumber(v[2]) or 0 end
      if used + cost > cap then
        ok = 0
        local remaining = cap - used
        if remaining < 0 then remaining = 0 end
        rows[i] = row(0, cap, remaining, month_end - now, month_end - now, 1000, 0)
      else
        rows[i] = row(1, cap, cap - used - cost, month_end - now, -1, 1000, 0)
        writes[#writes + 1] = {2, key, used + cost}
      end
    end
  end
  if ok == 1 then
    for _, w in ipairs(writes) do
      if w[1] == 1 then
        local ttl = math.ceil((w[3] - now) / 1000)
        if ttl < 1 then ttl = 1 end
        redis.call('SET', w[2], int(w[3]), 'PX', ttl)
      else
        redis.call('HSET', w[2], 'm', month_id, 'n', w[3])
        redis.call('PEXPIREAT', w[2], int(floor(month_end / 1000) + 86400000))
      end
    end
  end
  return ok .. ' ' .. int(now) .. '|' .. table.concat(rows, '|')
elseif op == 'pen' then
  local half_life, threshold, max_score, weight = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local crossed = {}
  for i = 1, #KEYS do
    crossed[i] = bump(KEYS[i], score_of(KEYS[i], half_life), weight, half_life, threshold, max_score)
  end
  return crossed
elseif op == 'qadd' then
  local month_id, month_end = month_window(now)
  if tonumber(ARGV[2]) ~= month_id then return 0 end
  for i = 1, #KEYS do
    local v = redis.call('HMGET', KEYS[i], 'm', 'n')
    local used = 0
    if tonumber(v[1]) == month_id then used = tonumber(v[2]) or 0 end
    redis.call('HSET', KEYS[i], 'm', month_id, 'n', used + tonumber(ARGV[i + 2]))
    redis.call('PEXPIREAT', KEYS[i], int(floor(month_end / 1000) + 86400000))
  end
  return #KEYS
elseif op == 'month' then
  local month_id, month_end = month_window(tonumber(ARGV[2]))
  return {month_id, month_end}
end
return redis.error_reply('unknown operation ' .. tostring(op))
"""

SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
