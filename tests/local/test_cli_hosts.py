"""The CLI against hosts that cannot be reached (the real ssh client, an unresolvable name)."""

from __future__ import annotations

import re

import pytest

from conftest import SCOPE, base_hosts, run_deployer

pytestmark = pytest.mark.local


@pytest.mark.parametrize("action", ["update", "deploy"])
def test_remote_actions_against_unresolvable_hosts_name_the_host_and_change_nothing(site, action: str) -> None:
    s = site()
    for args in (["-p", "jupyterhub", "-i", "prod", "-t", "designsafe", "-a", action], [action, "-i", "prod", "-t", "designsafe"]):
        result = run_deployer(args, s.path)
        assert result.returncode == 1, result.stderr
        assert "error: hub1 (root@hub.example.org:22): cannot connect over SSH" in result.stderr
        assert "Traceback" not in result.stderr
        assert re.search(r"^hub1\s+hub\s+unreachable\s", result.stdout, re.M), result.stdout
        # The run stopped at the hub's lock: the workers were never reached, and the table says so.
        for worker in ("worker1", "worker2"):
            assert re.search(rf"^{worker}\s+worker\s+not contacted\s", result.stdout, re.M), result.stdout


def test_plan_names_every_host_it_cannot_reach(site) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    hosts = base_hosts()
    for index, host in enumerate(hosts[SCOPE]["hosts"]):  # loopback addresses other than this machine's own name
        host.update(ssh_host=f"127.0.0.{index + 2}", ssh_port=port)
    result = run_deployer(["-i", "prod", "-t", "designsafe", "plan"], site(hosts=hosts).path)
    assert result.returncode == 1
    for index, name in enumerate(("hub1", "worker1", "worker2")):  # every host, not only the first one tried
        assert re.search(rf"{name} \(root@127\.0\.0\.{index + 2}:\d+\): cannot connect over SSH: .*Connection refused", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
