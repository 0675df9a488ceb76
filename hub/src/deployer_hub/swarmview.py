"""One look at the swarm that every running server's poll shares.

JupyterHub polls each server on its own timer (every ``poll_interval``, and all at once when the hub
starts). Asked one by one, each poll costs a service inspect, one or two task lists and a node inspect:
some 20 Docker calls per server per minute, 6,000 a minute with 300 servers, all through the Docker
proxy. Here the deployment's notebook services, their tasks and the swarm's nodes are listed together
(one call for the services, one per hundred of them for the tasks, one for the nodes), kept for
``max_age`` seconds, and concurrent polls wait for the one listing already under way. A server the
view does not know (created after it was taken, or re-created under the same name since) is looked
at on its own, as before.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import docker.errors as docker_errors

#: Services named in one task list: Docker resolves each name to its ID, and the names travel in the URL
#: (the Docker proxy reads at most 16 KiB of request head; a hundred names are some 5 KiB).
TASK_BATCH = 100


def current_task(tasks: Iterable[dict]) -> dict | None:
    """The task a service's server is: the one Swarm wants running, else the last one it changed
    (the Version index grows with every change in the swarm's store)."""
    tasks = list(tasks)
    wanted = [t for t in tasks if t.get("DesiredState") == "running"] or tasks
    return max(wanted, key=lambda t: (t.get("Version") or {}).get("Index", 0), default=None)


@dataclass(frozen=True)
class SwarmView:
    """The deployment's notebook services by name, each one's current task, and every node, at ``taken``."""

    taken: float
    services: dict[str, dict] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)  # service ID -> its current task
    nodes: dict[str, dict] = field(default_factory=dict)  # node ID -> node

    @classmethod
    def of(cls, taken: float, services: list[dict], tasks: list[dict] | None, nodes: list[dict]) -> SwarmView:
        by_service: dict[str, list[dict]] = {}
        for task in tasks or []:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        current = {sid: t for sid, ts in by_service.items() if (t := current_task(ts)) is not None}
        return cls(taken, {s["Spec"]["Name"]: s for s in services if (s.get("Spec") or {}).get("Name")}, current,
                   {n["ID"]: n for n in nodes if n.get("ID")})

    def server(self, name: str, service_id: str = "") -> tuple[dict, dict] | None:
        """(service, current task) of the service ``name``, or None when this view cannot say: the service is
        not in it, is another one than ``service_id`` (re-created since), or has no task in it (listed
        before Swarm made one, or the task lists failed)."""
        service = self.services.get(name)
        if service is None or (service_id and service.get("ID") != service_id):
            return None
        task = self.tasks.get(service["ID"])
        return (service, task) if task is not None else None

    def node(self, node_id: str) -> dict | None:
        return self.nodes.get(node_id)

    def ended(self, older_than: float, now: float | None = None) -> list[dict]:
        """Services whose server ended more than ``older_than`` seconds ago (wall clock): the current task is
        not wanted running and is no longer running. JupyterHub removes the service of a server it sees stop;
        these are the ones no hub will (their server unknown to it), which would else stay in the swarm."""
        now = time.time() if now is None else now
        found = []
        for service in self.services.values():
            task = self.tasks.get(service.get("ID", ""))
            if task is None or task.get("DesiredState") == "running":
                continue
            status = task.get("Status") or {}
            if status.get("State") in ("running", "starting", "preparing", "assigned", "accepted", "ready", "pending", "new"):
                continue
            since = timestamp(status.get("Timestamp", ""))
            if since is not None and now - since > older_than:
                found.append(service)
        return found


def timestamp(text: str) -> float | None:
    """Seconds since the epoch of Docker's RFC 3339 time (nanoseconds, Z or an offset); None if unreadable."""
    if not text:
        return None
    head, dot, rest = text.partition(".")
    zone = ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        head, zone = f"{head}.{rest[:min(digits, 6)]}", rest[digits:]
    else:
        head, zone = text[:19], text[19:]
    try:
        return datetime.fromisoformat(head + ("+00:00" if zone in ("Z", "") else zone)).timestamp()
    except ValueError:
        return None


Docker = Callable[..., Awaitable[Any]]


class SharedLook:
    """The latest SwarmView, refreshed when older than ``max_age``, one refresh at a time."""

    def __init__(self, max_age: float = 5.0) -> None:
        self.max_age = max_age
        self.refreshes = 0  # listings made (for the hub's log and for tests)
        self._view: SwarmView | None = None
        self._pending: asyncio.Future | None = None
        self._pending_taken = 0.0

    async def view(self, prefix: str, docker: Docker, not_before: float = 0.0) -> SwarmView:
        """A view at most ``max_age`` old and taken no earlier than ``not_before`` (monotonic): a server started
        or stopped since an older view is never judged by it."""
        view = self._view
        if view is not None and time.monotonic() - view.taken < self.max_age and view.taken >= not_before:
            return view
        pending = self._pending
        if pending is None or self._pending_taken < not_before:  # (one under way since before the change will not do)
            pending = self._pending = asyncio.ensure_future(self._refresh(prefix, docker))
            self._pending_taken = time.monotonic()
            pending.add_done_callback(self._done)
        return await asyncio.shield(pending)

    def _done(self, future: asyncio.Future) -> None:
        if self._pending is future:
            self._pending = None
        if not future.cancelled() and future.exception() is None:
            result = future.result()
            if self._view is None or result.taken >= self._view.taken:
                self._view = result

    async def _refresh(self, prefix: str, docker: Docker) -> SwarmView:
        taken = time.monotonic()
        self.refreshes += 1
        for _ in range(2):  # a service removed between the two lists fails the task list: list again, once
            services = await docker("services", filters={"name": prefix})
            names = [s["Spec"]["Name"] for s in services if (s.get("Spec") or {}).get("Name", "").startswith(prefix)]
            try:
                tasks: list[dict] | None = []
                for start in range(0, len(names), TASK_BATCH):
                    tasks += await docker("tasks", filters={"service": names[start:start + TASK_BATCH]})
                break
            except docker_errors.NotFound:
                tasks = None  # still failing: the view knows no task, and each poll asks for its own
        # After the tasks: a node that left meanwhile is gone from this list, as it is from the swarm.
        return SwarmView.of(taken, services, tasks, await docker("nodes"))
