"""The hub's spawns of the last hour, from a Prometheus that scrapes its /hub/metrics (``deployer status``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from deployer.errors import DeployerError

SPAWNS = "jupyterhub_server_spawn_duration_seconds"
QUERIES = {
    "succeeded": f'sum(increase({SPAWNS}_count{{status="success"}}[1h]))',
    "failed": f'sum(increase({SPAWNS}_count{{status="failure"}}[1h]))',
    "p50": f'histogram_quantile(0.5, sum by (le) (increase({SPAWNS}_bucket{{status="success"}}[1h])))',
    "p95": f'histogram_quantile(0.95, sum by (le) (increase({SPAWNS}_bucket{{status="success"}}[1h])))',
}


@dataclass
class SpawnStats:
    succeeded: float
    failed: float
    p50: float | None  # seconds; None without a successful spawn in the hour
    p95: float | None

    def __str__(self) -> str:
        times = f" (p50 {self.p50:.1f} s, p95 {self.p95:.1f} s)" if self.p50 is not None and self.p95 is not None else ""
        return f"spawns in the last hour: {round(self.succeeded)} succeeded{times}, {round(self.failed)} failed"


def last_hour(url: str, timeout: float = 10) -> SpawnStats:
    values: dict[str, float | None] = {}
    for name, query in QUERIES.items():
        try:
            answer = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout)
            answer.raise_for_status()
            result = answer.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            raise DeployerError(f"metrics_prometheus_url {url}: cannot query it ({type(error).__name__}: {error})") from None
        value = float(result[0]["value"][1]) if result else math.nan
        values[name] = None if math.isnan(value) or math.isinf(value) else value
    return SpawnStats(values["succeeded"] or 0.0, values["failed"] or 0.0, values["p50"], values["p95"])
