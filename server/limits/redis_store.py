"""The shared limit store: the same counters as memory_store.py, on Redis (or Valkey), so every replica
sees one set of limits. Each operation is one Lua script, atomic on the server: a reservation across
several counters is all or nothing, whatever the other replicas do at the same moment.

Keys carry the identity as a hash tag (`llm:{identity}:...`), so every key of one script lives in one
slot of a Redis Cluster. Times come from the gateway's clock (replicas need synchronised clocks, as for
any log timestamp); key lifetimes are set relative to it, so Redis's own clock does not matter. Redis
unreachable or slow → StoreUnavailable; redis-py reconnects by itself on the next call once it is back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from server.core.limits import Check, LimitKind, Refusal, StoreUnavailable

_KINDS = {
    LimitKind.REQUESTS_PER_MINUTE: "bucket",
    LimitKind.TOKENS_PER_MINUTE: "bucket",
    LimitKind.CONCURRENT: "concurrent",
    LimitKind.USD_PER_DAY: "budget",
    LimitKind.USD_PER_MONTH: "budget",
}

# KEYS: one per check, then the lease's marker. ARGV: now, lease, until (the marker's end), then per check:
# kind, limit, cost, expires_at. Returns {0} or {index, retry_after}.
_RESERVE = """
local now = tonumber(ARGV[1])
local lease = ARGV[2]
local n = #KEYS - 1
local function arg(i, j) return ARGV[3 + (i - 1) * 4 + j] end
local function tat_of(key)
  local v = redis.call('GET', key)
  local tat = v and tonumber(v) or now
  if tat < now then tat = now end
  return tat
end
for i = 1, n do
  local kind, limit, cost = arg(i, 1), tonumber(arg(i, 2)), tonumber(arg(i, 3))
  if kind == 'bucket' then
    local after = tat_of(KEYS[i]) + cost * 60 / limit
    if after - now > 60.000001 then return {i, string.format('%.17g', after - now - 60)} end
  elseif kind == 'concurrent' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('ZCARD', KEYS[i]) + 1 > limit then return {i, ''} end
  else
    local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
    if spent + cost > limit then return {i, ''} end
  end
end
for i = 1, n do
  local kind, limit, cost, expires = arg(i, 1), tonumber(arg(i, 2)), tonumber(arg(i, 3)), tonumber(arg(i, 4))
  if kind == 'bucket' then
    local after = tat_of(KEYS[i]) + cost * 60 / limit
    redis.call('SET', KEYS[i], string.format('%.17g', after), 'PX', math.ceil((after - now + 1) * 1000))
  elseif kind == 'concurrent' then
    redis.call('ZADD', KEYS[i], expires, lease)
    redis.call('PEXPIRE', KEYS[i], math.ceil((expires - now) * 1000) + 1)
  else
    redis.call('INCRBY', KEYS[i], cost)
    redis.call('PEXPIRE', KEYS[i], math.ceil((expires - now + 86400) * 1000))
  end
end
redis.call('SET', KEYS[#KEYS], '1', 'PX', math.ceil((tonumber(ARGV[3]) - now) * 1000) + 1)
return {0, ''}
"""

# KEYS: one per check, then the lease's marker. ARGV: now, lease, then per check: kind, limit, delta,
# expires_at. Applied only if the marker is there (it goes with it): at most once per reservation.
# Returns each budget's spend after, or nothing when there was nothing to apply.
_SETTLE = """
local now = tonumber(ARGV[1])
local lease = ARGV[2]
local function arg(i, j) return ARGV[2 + (i - 1) * 4 + j] end
if redis.call('DEL', KEYS[#KEYS]) == 0 then return {} end
local spent = {}
for i = 1, #KEYS - 1 do
  spent[i] = 0
  local kind, limit, delta, expires = arg(i, 1), tonumber(arg(i, 2)), tonumber(arg(i, 3)), tonumber(arg(i, 4))
  if kind == 'bucket' then
    if delta ~= 0 then
      local v = redis.call('GET', KEYS[i])
      local base = v and tonumber(v) or now
      if delta > 0 and base < now then base = now end
      local tat = base + delta * 60 / limit
      if tat > now then
        redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', math.ceil((tat - now + 1) * 1000))
      else
        redis.call('DEL', KEYS[i])
      end
    end
  elseif kind == 'concurrent' then
    redis.call('ZREM', KEYS[i], lease)
  elseif delta ~= 0 then
    spent[i] = redis.call('INCRBY', KEYS[i], delta)
    redis.call('PEXPIRE', KEYS[i], math.ceil((expires - now + 86400) * 1000))
  else
    spent[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
end
return spent
"""

# ARGV: now, then per check: kind, limit. Returns what is used of each, as strings.
_STANDING = """
local now = tonumber(ARGV[1])
local used = {}
for i = 1, #KEYS do
  local kind, limit = ARGV[1 + (i - 1) * 2 + 1], tonumber(ARGV[1 + (i - 1) * 2 + 2])
  if kind == 'bucket' then
    local v = redis.call('GET', KEYS[i])
    local ahead = v and (tonumber(v) - now) or 0
    if ahead < 0 then ahead = 0 end
    used[i] = string.format('%.17g', ahead * limit / 60)
  elseif kind == 'concurrent' then
    used[i] = tostring(redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf'))
  else
    used[i] = redis.call('GET', KEYS[i]) or '0'
  end
end
return used
"""


class RedisLimitStore:
    def __init__(self, url: str, timeout: float) -> None:
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._standing = self._redis.register_script(_STANDING)

    async def reserve(self, checks: Sequence[Check], lease: str, now: float, until: float) -> Refusal | None:
        args: list[Any] = [repr(now), lease, repr(until)]
        for check in checks:
            args += [_KINDS[check.kind], check.limit, check.cost, repr(check.expires_at)]
        index, retry_after = await self._run(self._reserve, [*(c.key for c in checks), lease], args)
        if int(index) == 0:
            return None
        return Refusal(int(index) - 1, float(retry_after) if retry_after else None)

    async def settle(
        self, checks: Sequence[Check], deltas: Sequence[int], lease: str, now: float
    ) -> list[int]:
        args: list[Any] = [repr(now), lease]
        for check, delta in zip(checks, deltas, strict=True):
            args += [_KINDS[check.kind], check.limit, delta, repr(check.expires_at)]
        spent = await self._run(self._settle, [*(c.key for c in checks), lease], args)
        return [int(value) for value in spent] if spent else [0] * len(checks)

    async def standing(self, checks: Sequence[Check], now: float) -> list[int]:
        args: list[Any] = [repr(now)]
        for check in checks:
            args += [_KINDS[check.kind], check.limit]
        used = await self._run(self._standing, [c.key for c in checks], args)
        return [round(float(value)) for value in used]

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"redis: {type(error).__name__}") from error

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"redis: {type(error).__name__}") from error
