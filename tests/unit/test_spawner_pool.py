"""Docker calls of different users run at the same time (the stock spawner has one thread)."""

from __future__ import annotations

import threading

from deployer_hub.spawner import DockerCalls, TenantSwarmSpawner
from traitlets.config import Config


def test_docker_calls_of_several_users_run_concurrently() -> None:
    config = Config()
    apply_shared(config)
    barrier = threading.Barrier(8, timeout=5)  # breaks unless 8 calls are in flight together
    pool = TenantSwarmSpawner(config=config).executor
    futures = [pool.submit(barrier.wait) for _ in range(8)]
    assert sorted(f.result(timeout=10) for f in futures) == list(range(8))
    assert TenantSwarmSpawner(config=config).executor is pool  # one pool for the hub, sized for its users


def test_the_pool_and_node_names_belong_to_the_hubs_configuration_not_the_class() -> None:
    """Two hubs (two configurations) in one process share nothing; a spawner without one has its own."""
    first, second = Config(), Config()
    apply_shared(first)
    apply_shared(second)
    a, b = TenantSwarmSpawner(config=first), TenantSwarmSpawner(config=second)
    assert a.executor is not b.executor and a.calls.node_names is not b.calls.node_names
    a.calls.node_names["n1"] = "worker1"
    assert "n1" not in b.calls.node_names and "n1" not in TenantSwarmSpawner().calls.node_names
    assert TenantSwarmSpawner().executor is not TenantSwarmSpawner().executor


def apply_shared(config: Config) -> None:
    """What hubconfig.apply gives the spawners of one hub."""
    config.TenantSwarmSpawner.docker_calls = DockerCalls()


def test_why_a_server_stopped_outlives_the_spawner_jupyterhub_drops() -> None:
    """JupyterHub discards a stopped server's spawner; the reason the page shows is kept hub-wide per user."""

    class User:
        name = "jdoe"

    config = Config()
    apply_shared(config)
    TenantSwarmSpawner(config=config, user=User()).stopped_reason = "The machine running your server (worker1) went down"
    assert TenantSwarmSpawner(config=config, user=User()).stopped_reason.startswith("The machine running your server (worker1)")
    TenantSwarmSpawner(config=config, user=User()).stopped_reason = ""  # a new start clears it
    assert TenantSwarmSpawner(config=config, user=User()).stopped_reason == ""
