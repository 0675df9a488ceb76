"""`deployer status` shows the newest audit-log line of its own deployment."""

from __future__ import annotations

import json

from deployer.hosts.executor import LocalExecutor
from deployer.hosts.status import last_run


def test_the_newest_line_of_this_deployment_is_found(tmp_path) -> None:
    log = tmp_path / "audit.log"
    lines = [{"deployment": "jupyterhub.prod.a", "action": "deploy", "result": "ok"},
             {"deployment": "jupyterhub.prod.b", "action": "destroy", "result": "ok"},
             {"deployment": "jupyterhub.prod.a", "action": "update", "result": "failed"},
             {"deployment": "jupyterhub.prod.ab", "action": "deploy", "result": "ok"}]
    log.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    assert last_run(LocalExecutor(), "jupyterhub.prod.a", str(log))["action"] == "update"
    assert last_run(LocalExecutor(), "jupyterhub.prod.b", str(log))["action"] == "destroy"
    assert last_run(LocalExecutor(), "jupyterhub.prod.c", str(log)) is None
    assert last_run(LocalExecutor(), "jupyterhub.prod.a", str(tmp_path / "missing")) is None
