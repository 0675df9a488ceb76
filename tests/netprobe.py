"""Probing, from inside a container, what it can reach: the network guard's tests in the swarm and lab tiers.

The probe is a small Python program run in the container (``docker exec``, as the container's own
user, so the packets are the user's); it tries each target and reports what it saw. A target the
guard refuses gives "blocked" (the REJECT's ICMP: "no route to host") or a timeout; a closed port
gives "closed"; a listener gives "open" (or the HTTP status for an http target).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass

PROBE = r"""
import errno, json, socket, sys, urllib.request
def tcp(host, port):
    s = socket.socket(); s.settimeout(4)
    try:
        s.connect((host, port)); return "open"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return {errno.ECONNREFUSED: "closed", errno.EHOSTUNREACH: "blocked", errno.ENETUNREACH: "blocked", errno.EACCES: "blocked", errno.EPERM: "blocked"}.get(exc.errno, f"error {exc.errno}")
    finally:
        s.close()
def http(url):
    try:
        with urllib.request.urlopen(url, timeout=6) as r: return f"http {r.status}"
    except urllib.error.HTTPError as exc: return f"http {exc.code}"
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        code = getattr(reason, "errno", None)
        return {errno.ECONNREFUSED: "closed", errno.EHOSTUNREACH: "blocked", errno.ENETUNREACH: "blocked"}.get(code, "timeout" if "timed out" in str(reason) else f"error {reason}")
def dns(name):
    try: return "resolves " + socket.gethostbyname(name)
    except OSError: return "no answer"
out = {}
for t in json.loads(sys.argv[1]):
    out[t["name"]] = {"tcp": lambda: tcp(t["host"], t["port"]), "http": lambda: http(t["url"]), "dns": lambda: dns(t["host"])}[t["kind"]]()
print("RESULT" + json.dumps(out))
"""


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # tcp, http or dns
    allowed: bool
    host: str = ""
    port: int = 0
    url: str = ""

    def as_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "host": self.host, "port": self.port, "url": self.url}

    def reached(self, observed: str) -> bool:
        return observed == "open" or observed.startswith(("http ", "resolves "))


def tcp(name: str, host: str, port: int, allowed: bool = False) -> Target:
    return Target(name, "tcp", allowed, host=host, port=port)


def probe(exec_argv: list[str], targets: list[Target], timeout: float = 300, *, remote: list[str] | None = None) -> dict[str, str]:
    """Runs the probe with ``exec_argv`` (e.g. ["docker", "exec", "-i", ID]) + ["python3", "-", targets], the
    program on stdin; with ``remote`` (an ssh command line) that command runs on the remote host."""
    argv = [*exec_argv, "python3", "-", json.dumps([t.as_json() for t in targets])]
    if remote:
        argv = [*remote, shlex.join(argv)]
    result = subprocess.run(argv, input=PROBE, capture_output=True, text=True, timeout=timeout)
    if "RESULT" not in result.stdout:
        raise AssertionError(f"the probe did not run ({' '.join(exec_argv)}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.split("RESULT", 1)[1])


def table(targets: list[Target], seen: dict[str, str], control: dict[str, str] | None = None, control_name: str = "control") -> str:
    """target | expected | observed | the control's observation | ok."""
    rows = [("target", "expected", "observed from the notebook", control_name, "ok")]
    for t in targets:
        expected = "reached" if t.allowed else "refused"
        ok = t.reached(seen[t.name]) == t.allowed
        rows.append((t.name, expected, seen[t.name], (control or {}).get(t.name, ""), "yes" if ok else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def wrong(targets: list[Target], seen: dict[str, str]) -> list[str]:
    return [f"{t.name}: expected {'reached' if t.allowed else 'refused'}, saw {seen[t.name]}" for t in targets if t.reached(seen[t.name]) != t.allowed]
