"""The shared capacity store: the providers' rate limits counted on the same Redis (or Valkey) as the
caller limits, so every replica draws on one bucket per deployment and limit. Each operation is one Lua
script, atomic on the server: choosing a deployment and charging it cannot interleave with another
replica's. The same buckets as capacity_memory.py (GCRA over a one-minute window; see
server/core/capacity.py).

Keys: `llm:cap:{model}:<provider>:t:<dim>` (a bucket's theoretical arrival time), `...:l:<dim>` (a
limit learned from headers, forgotten after 10 minutes), `...:cool` (a cooldown's end). The model is the
hash tag, so one script's keys share a Redis Cluster slot. Every key expires once it means nothing more
(a bucket when it is full again), so a replica that dies leaves nothing behind for longer than a minute.

Redis unreachable or slow → StoreUnavailable: the call is refused (fail closed, docs/reliability.md),
since no replica can know what the others sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from server.core.capacity import WINDOW_S
from server.core.limits import StoreUnavailable
from server.core.ports import Offer
from server.limits.capacity_memory import LEARNED_TTL_S

_KEYS_PER_OFFER = 9  # 4 buckets, 4 learned limits, 1 cooldown

_COMMON = """
local W = tonumber(ARGV[2])
local function limit_of(base, i, configured)
  if configured > 0 then return configured end
  return tonumber(redis.call('GET', KEYS[base + 4 + i]) or '0')
end
local function tat_of(key, now)
  return tonumber(redis.call('GET', key) or '0')
end
local function set_tat(key, tat, now)
  if tat > now then
    redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - now) * 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
"""

# ARGV: now, window, cost x4, then per offer: weight, limit x4. Returns {index (1-based) or 0, wait}.
_TAKE = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
local costs = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local n = #KEYS / 9
local best, best_score, earliest = 0, -1, -1
local chosen = {}
for o = 1, n do
  local base, arg = (o - 1) * 9, 6 + (o - 1) * 5
  local weight = tonumber(ARGV[arg + 1])
  local wait = tonumber(redis.call('GET', KEYS[base + 9]) or '0') - now
  if wait < 0 then wait = 0 end
  local headroom = 1
  local limits = {}
  for i = 1, 4 do
    limits[i] = limit_of(base, i, tonumber(ARGV[arg + 1 + i]))
    if limits[i] > 0 then
      local tat = tat_of(KEYS[base + i], now)
      if tat < now then tat = now end
      local after = tat + costs[i] * W / limits[i]
      if after - now > W + 0.000001 then
        if after - now - W > wait then wait = after - now - W end
      elseif 1 - (after - now) / W < headroom then
        headroom = 1 - (after - now) / W
      end
    end
  end
  if wait > 0 then
    if earliest < 0 or wait < earliest then earliest = wait end
  elseif headroom * weight > best_score then
    best, best_score, chosen = o, headroom * weight, limits
  end
end
if best == 0 then
  if earliest < 0 then earliest = W end
  return {0, string.format('%.17g', earliest)}
end
local base = (best - 1) * 9
for i = 1, 4 do
  if chosen[i] > 0 and costs[i] ~= 0 then
    local tat = tat_of(KEYS[base + i], now)
    if tat < now then tat = now end
    set_tat(KEYS[base + i], tat + costs[i] * W / chosen[i], now)
  end
end
return {best, '0'}
"""
)

# KEYS: one offer's 9. ARGV: now, window, delta x4, limit x4.
_ADJUST = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
for i = 1, 4 do
  local delta = tonumber(ARGV[2 + i])
  local limit = limit_of(0, i, tonumber(ARGV[6 + i]))
  if limit > 0 and delta ~= 0 then
    local tat = tat_of(KEYS[i], now)
    if tat == 0 then tat = now end
    if delta > 0 and tat < now then tat = now end
    set_tat(KEYS[i], tat + delta * W / limit, now)
  end
end
return 0
"""
)

# KEYS: one offer's 9. ARGV: now, window, dim (1-based), limit, remaining, learned ttl.
_LEARN = (
    _COMMON
    + """
local now, dim = tonumber(ARGV[1]), tonumber(ARGV[3])
local limit, remaining = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('SET', KEYS[4 + dim], limit, 'PX', math.ceil(tonumber(ARGV[6]) * 1000))
local used = limit - remaining
if used < 0 then used = 0 end
if used > limit then used = limit end
local floor = now + used / limit * W
local tat = tat_of(KEYS[dim], now)
if floor > tat then set_tat(KEYS[dim], floor, now) end
return 0
"""
)

# KEYS: one offer's 9. ARGV: now, window, until.
_COOL = """
local now, untl = tonumber(ARGV[1]), tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[9]) or '0')
if untl > current and untl > now then
  redis.call('SET', KEYS[9], string.format('%.17g', untl), 'PX', math.ceil((untl - now) * 1000) + 1)
end
return 0
"""

# KEYS: one offer's 9. ARGV: now, window, limit x4. Returns limits x4, used x4, cooldown left.
_USAGE = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
local out = {}
for i = 1, 4 do
  local limit = limit_of(0, i, tonumber(ARGV[2 + i]))
  local ahead = tat_of(KEYS[i], now) - now
  if ahead < 0 then ahead = 0 end
  out[i] = tostring(limit)
  out[4 + i] = string.format('%.17g', limit > 0 and ahead * limit / W or 0)
end
local cool = tonumber(redis.call('GET', KEYS[9]) or '0') - now
if cool < 0 then cool = 0 end
out[9] = string.format('%.17g', cool)
return out
"""
)


def _keys(offer: Offer) -> list[str]:
    return [
        *(f"{offer.key}:t:{dim}" for dim in range(4)),
        *(f"{offer.key}:l:{dim}" for dim in range(4)),
        f"{offer.key}:cool",
    ]


class RedisCapacityStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._take = client.register_script(_TAKE)
        self._adjust = client.register_script(_ADJUST)
        self._learn = client.register_script(_LEARN)
        self._cool = client.register_script(_COOL)
        self._usage = client.register_script(_USAGE)

    @classmethod
    def from_url(cls, url: str, timeout: float) -> RedisCapacityStore:
        return cls(
            redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
            )
        )

    async def take(
        self, offers: Sequence[Offer], costs: tuple[int, int, int, int], now: float
    ) -> tuple[int | None, float]:
        keys = [key for offer in offers for key in _keys(offer)]
        args: list[Any] = [repr(now), WINDOW_S, *costs]
        for offer in offers:
            args += [repr(offer.weight), *offer.limits]
        index, wait = await self._run(self._take, keys, args)
        return (int(index) - 1, 0.0) if int(index) else (None, float(wait))

    async def adjust(self, offer: Offer, deltas: Sequence[int], now: float) -> None:
        await self._run(self._adjust, _keys(offer), [repr(now), WINDOW_S, *deltas, *offer.limits])

    async def learn(self, offer: Offer, dim: int, limit: int, remaining: int, now: float) -> None:
        if limit > 0:
            args = [repr(now), WINDOW_S, dim + 1, limit, remaining, LEARNED_TTL_S]
            await self._run(self._learn, _keys(offer), args)

    async def cool(self, offer: Offer, until: float, now: float) -> None:
        await self._run(self._cool, _keys(offer), [repr(now), WINDOW_S, repr(until)])

    async def usage(
        self, offer: Offer, now: float
    ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], float]:
        out = await self._run(self._usage, _keys(offer), [repr(now), WINDOW_S, *offer.limits])
        values = [float(value) for value in out]
        limits = tuple(int(v) for v in values[:4])
        used = tuple(round(v) for v in values[4:8])
        return limits, used, values[8]  # type: ignore[return-value]

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"redis: {type(error).__name__}") from error
