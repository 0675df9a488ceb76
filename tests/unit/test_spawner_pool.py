"""Docker calls of different users run at the same time (the stock spawner has one thread)."""

from __future__ import annotations

import threading

from deployer_hub.spawner import TenantSwarmSpawner


def test_docker_calls_of_several_users_run_concurrently() -> None:
    barrier = threading.Barrier(8, timeout=5)  # breaks unless 8 calls are in flight together
    pool = TenantSwarmSpawner().executor
    futures = [pool.submit(barrier.wait) for _ in range(8)]
    assert sorted(f.result(timeout=10) for f in futures) == list(range(8))
    assert TenantSwarmSpawner().executor is pool  # one pool for the hub, sized for its users
