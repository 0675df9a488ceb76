"""The swarm listing every server's poll shares (deployer_hub.swarmview): which task is a server's, when
a poll must ask on its own, which ended services are swept, and that concurrent polls make one listing
of a constant number of calls whatever the number of servers. The Docker calls here are a recording
stand-in of the engine's list endpoints; the swarm tier polls real services through the real proxy."""

from __future__ import annotations

import asyncio
import time

import docker.errors
import pytest
from deployer_hub.swarmview import TASK_BATCH, SharedLook, SwarmView, current_task, timestamp

PREFIX = "jupyterhub-x-nb-"


def service(name: str, sid: str) -> dict:
    return {"ID": sid, "Spec": {"Name": name}}


def task(sid: str, index: int, desired: str = "running", state: str = "running", node: str = "n1", stamp: str = "") -> dict:
    return {"ServiceID": sid, "Version": {"Index": index}, "DesiredState": desired, "NodeID": node,
            "Status": {"State": state, "Timestamp": stamp}}


def test_the_current_task_is_the_one_wanted_running_else_the_last_changed():
    old, new = task("s", 5, desired="shutdown", state="failed"), task("s", 9)
    assert current_task([new, old]) is new
    ended = [task("s", 3, desired="shutdown", state="failed"), task("s", 12, desired="shutdown", state="complete")]
    assert current_task(ended)["Version"]["Index"] == 12
    assert current_task([]) is None


def test_a_server_the_view_cannot_vouch_for_is_asked_on_its_own():
    view = SwarmView.of(0.0, [service(f"{PREFIX}alice", "A"), service(f"{PREFIX}bob", "B")], [task("A", 4)], [{"ID": "n1"}])
    assert view.server(f"{PREFIX}alice", "A")[1]["Version"]["Index"] == 4
    assert view.server(f"{PREFIX}alice") is not None  # no ID known yet (a hub that just started)
    assert view.server(f"{PREFIX}alice", "OTHER") is None  # re-created since the view was taken
    assert view.server(f"{PREFIX}bob", "B") is None  # no task listed yet
    assert view.server(f"{PREFIX}carol") is None  # created after the view
    assert view.node("n1") == {"ID": "n1"} and view.node("gone") is None


def test_docker_times_are_read_to_the_microsecond_in_any_zone():
    assert timestamp("2026-12-08T01:02:03.123456789Z") == pytest.approx(1796691723.123456)
    assert timestamp("2026-12-08T01:02:03Z") == pytest.approx(1796691723.0)
    assert timestamp("2026-12-08T02:02:03.5+01:00") == pytest.approx(1796691723.5)
    assert timestamp("") is None and timestamp("yesterday") is None


def test_only_services_whose_server_ended_long_ago_are_swept():
    now = 1796691723.0
    long_ago, lately = "2026-12-07T00:00:00Z", "2026-12-08T01:00:00Z"
    services = [service(n, n) for n in ("failed-old", "failed-new", "running", "shutting", "complete-old", "untasked")]
    tasks = [task("failed-old", 1, "shutdown", "failed", stamp=long_ago), task("failed-new", 2, "shutdown", "failed", stamp=lately),
             task("running", 3, stamp=long_ago), task("shutting", 4, "shutdown", "running", stamp=long_ago),
             task("complete-old", 5, "shutdown", "complete", stamp=long_ago)]
    view = SwarmView.of(0.0, services, tasks, [])
    assert sorted(s["ID"] for s in view.ended(600, now)) == ["complete-old", "failed-old"]


class Engine:
    """The list endpoints of a swarm with ``count`` notebook services, recording every call."""

    def __init__(self, count: int, delay: float = 0.01) -> None:
        self.services = [service(f"{PREFIX}u{i}", f"S{i}") for i in range(count)]
        self.calls: list[tuple[str, dict]] = []
        self.delay = delay
        self.vanish_once: str | None = None

    async def __call__(self, method: str, **kwargs) -> list[dict]:
        self.calls.append((method, kwargs))
        await asyncio.sleep(self.delay)
        if method == "services":
            assert kwargs["filters"] == {"name": PREFIX}
            return list(self.services)
        if method == "nodes":
            return [{"ID": "n1"}]
        names = kwargs["filters"]["service"]
        assert len(names) <= TASK_BATCH
        if self.vanish_once in names:  # removed after it was listed: Docker fails the whole list
            self.services = [s for s in self.services if s["Spec"]["Name"] != self.vanish_once]
            self.vanish_once = None
            raise docker.errors.NotFound("service not found")
        return [task(s["ID"], 1) for s in self.services if s["Spec"]["Name"] in names]


def test_a_thousand_concurrent_polls_make_one_listing_of_a_dozen_calls():
    engine, look = Engine(1000), SharedLook(max_age=5.0)

    async def polls() -> list[SwarmView]:
        return await asyncio.gather(*(look.view(PREFIX, engine) for _ in range(1000)))

    views = asyncio.run(polls())
    assert len({id(v) for v in views}) == 1 and look.refreshes == 1
    assert [m for m, _ in engine.calls].count("tasks") == 10 and len(engine.calls) == 12
    assert all(views[0].server(f"{PREFIX}u{i}", f"S{i}") for i in range(1000))


def test_a_view_is_reused_until_it_is_old_and_then_taken_again():
    engine, look = Engine(3), SharedLook(max_age=0.05)

    async def twice() -> tuple[SwarmView, SwarmView, SwarmView]:
        first = await look.view(PREFIX, engine)
        again = await look.view(PREFIX, engine)
        await asyncio.sleep(0.06)
        return first, again, await look.view(PREFIX, engine)

    first, again, later = asyncio.run(twice())
    assert first is again and later is not first and later.taken > first.taken and look.refreshes == 2


def test_a_service_removed_while_listed_is_listed_again_not_failed():
    engine = Engine(150)
    engine.vanish_once = f"{PREFIX}u120"
    view = asyncio.run(SharedLook().view(PREFIX, engine))
    assert view.server(f"{PREFIX}u120") is None and view.server(f"{PREFIX}u7", "S7") is not None
    assert [m for m, _ in engine.calls].count("services") == 2


def test_a_failed_listing_fails_its_waiters_and_the_next_poll_tries_again():
    look, attempts = SharedLook(), []

    async def broken(method: str, **kwargs) -> list:
        attempts.append(method)
        raise docker.errors.APIError("engine down")

    async def polls() -> list:
        return await asyncio.gather(*(look.view(PREFIX, broken) for _ in range(5)), return_exceptions=True)

    assert all(isinstance(r, docker.errors.APIError) for r in asyncio.run(polls()))
    assert attempts == ["services"]
    engine = Engine(1)
    start = time.monotonic()
    assert asyncio.run(look.view(PREFIX, engine)).taken >= start


def test_a_poll_after_its_server_changed_never_reads_an_older_view():
    engine, look = Engine(2), SharedLook(max_age=60.0)

    async def scenario() -> tuple[SwarmView, SwarmView, SwarmView]:
        before = await look.view(PREFIX, engine)
        changed = time.monotonic()  # e.g. the server was stopped: its service is gone
        engine.services = engine.services[1:]
        after = await look.view(PREFIX, engine, not_before=changed)
        return before, after, await look.view(PREFIX, engine)

    before, after, later = asyncio.run(scenario())
    assert before.server(f"{PREFIX}u0") is not None and after.server(f"{PREFIX}u0") is None
    assert later is after and look.refreshes == 2  # the fresh view serves everyone after it
