"""One token refresh in flight per user; the others wait for its result.

Tenants that rotate refresh tokens (Tapis, many OpenID Connect providers) accept each
refresh token once. Six page loads of one session arriving together would otherwise send
six refresh grants: one wins, five are refused, and five pages go to the login page.

Callers join the refresh already running for the same key. A caller that arrives just after
it finished still holds the old refresh token (JupyterHub saves the new auth state after
``refresh_user`` returns), so results are also kept for a short while by the refresh token
they replaced and handed to late callers instead of a second grant.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any


class SingleFlight:
    def __init__(self, *, wait_timeout: float = 30.0, remember_for: float = 120.0):
        self.wait_timeout = wait_timeout
        self.remember_for = remember_for
        self._running: dict[str, asyncio.Future] = {}
        self._done: dict[str, tuple[float, Any]] = {}  # digest of the replaced refresh token -> (until, result)

    @staticmethod
    def _digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def replaced(self, refresh_token: str) -> Any | None:
        """The result of an earlier refresh that used ``refresh_token``, if still remembered."""
        now = time.monotonic()
        for key in [k for k, (until, _) in self._done.items() if until < now]:
            del self._done[key]
        entry = self._done.get(self._digest(refresh_token))
        return entry[1] if entry else None

    async def run(self, key: str, refresh_token: str, work: Callable[[], Awaitable[Any]]) -> Any:
        """``await work()`` unless a refresh for ``key`` runs (then wait for it, bounded) or
        ``refresh_token`` was already used (then its result)."""
        earlier = self.replaced(refresh_token)
        if earlier is not None:
            return earlier
        running = self._running.get(key)
        if running is not None:
            return await asyncio.wait_for(asyncio.shield(running), self.wait_timeout)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await work()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            future.set_result(result)
            if result:
                self._done[self._digest(refresh_token)] = (time.monotonic() + self.remember_for, result)
            return result
        finally:
            del self._running[key]
