"""The tenant simulator (tests/sim/tenant.py) in a process of its own, so that its answers to the
hub (login, profile, TAS at every spawn) do not share an interpreter with the benchmark's clients.

    python simserver.py SPEC.json

SPEC: {"host", "cert", "key", "tenant_id", "clients": [[id, secret, callback], ...],
       "tas_role": [account, password], "users": [[name, password, uid, gid], ...]}
Prints one JSON line {"agave": ..., "tas": ...} when it serves, then runs until its standard
input closes (the benchmark ends or dies) or it is terminated.
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sim.tenant import TenantSimulator


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(spec["cert"], spec["key"])
    with TenantSimulator(tenant_id=spec["tenant_id"], host=spec["host"], ssl_context=context).start() as sim:
        for name, password, uid, gid in spec["users"]:
            sim.add_user(name, password, uid=uid, gid=gid, home_directory=f"05/{uid}/{name}")
        sim.add_tas_role_account(*spec["tas_role"])
        for client in spec["clients"]:  # one per hub deployment (its own callback URL)
            sim.add_client(*client)
        print(json.dumps({"agave": sim.agave_base_url, "tas": sim.tas_base_url}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1])
