"""Which worker and which of its GPUs a notebook gets: chosen by the hub, not by Swarm's reservations.

Deploy declares each worker's GPUs to its engine (``node-generic-resources``: device ids, or a count),
so the swarm's node descriptions are the inventory. Swarm could reserve them itself (a service's
``GenericResources``), but Docker 20.10's constraint enforcer rejects a running task that holds a
named generic resource on *any* update of its node (a label added, the node flapping): its check is
inverted (``HasResource`` true means "still there", read as "gone"; swarmkit's
constraint_enforcer.go). A GPU notebook would be killed by the next ``docker node update``
(reproduced on the lab). So the hub pins the notebook to a node (``node.id==``), names its devices
in ``NVIDIA_VISIBLE_DEVICES`` (what NVIDIA's container runtime reads), and records them in the
service's label :data:`LABEL`, which is how the next spawn, also after a hub restart, knows they are
taken. Spawns that want GPUs choose under one lock. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KIND = "NVIDIA-GPU"
#: On a notebook service: "<node ID>:<device>,<device>" (the GPUs it holds).
LABEL = "deployer.gpus"
#: NVIDIA's container runtime gives a container no GPU with this (CUDA base images default to all).
NO_GPU = "void"


@dataclass(frozen=True)
class Worker:
    node_id: str
    hostname: str
    devices: tuple[str, ...]  # ids, or indexes "0".."N-1" when the worker declares a count


def inventory(node: dict, worker_label: str = "deployer.worker") -> Worker | None:
    """The node's GPUs if it can take notebooks now (a Ready, active worker of the deployment, its label
    ``worker_label``, that declares any), else None."""
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    if (spec.get("Labels") or {}).get(worker_label) != "true" or spec.get("Availability") != "active" or status.get("State") != "ready":
        return None
    description = node.get("Description") or {}
    devices: list[str] = []
    for resource in (description.get("Resources") or {}).get("GenericResources") or []:
        named, discrete = resource.get("NamedResourceSpec") or {}, resource.get("DiscreteResourceSpec") or {}
        if named.get("Kind") == KIND and isinstance(named.get("Value"), str):
            devices.append(named["Value"])
        elif discrete.get("Kind") == KIND and isinstance(discrete.get("Value"), int):
            devices.extend(str(i) for i in range(discrete["Value"]))
    if not devices:
        return None
    return Worker(str(node.get("ID")), str(description.get("Hostname") or node.get("ID")), tuple(sorted(set(devices))))


def label(node_id: str, devices: Iterable[str]) -> str:
    return f"{node_id}:{','.join(devices)}"


def in_use(services: Iterable[dict]) -> dict[str, set[str]]:
    """Node ID -> the devices the deployment's notebook services hold (by their label)."""
    held: dict[str, set[str]] = {}
    for service in services:
        value = (((service.get("Spec") or {}).get("Labels")) or {}).get(LABEL) or ""
        node_id, _, devices = value.partition(":")
        if node_id and devices:
            held.setdefault(node_id, set()).update(d for d in devices.split(",") if d)
    return held


class NoFreeGpus(Exception):
    """No worker has enough free GPUs; the message is for the user."""


def choose(workers: Iterable[Worker], held: dict[str, set[str]], count: int) -> tuple[Worker, tuple[str, ...]]:
    """The worker with the most free GPUs (ties: by name) and ``count`` of them, or NoFreeGpus saying how things stand."""
    ranked = []
    total = free_total = 0
    for worker in workers:
        free = [d for d in worker.devices if d not in held.get(worker.node_id, set())]
        total, free_total = total + len(worker.devices), free_total + len(free)
        ranked.append((-len(free), worker.hostname, worker, free))
    ranked.sort(key=lambda item: item[:2])
    if ranked and len(ranked[0][3]) >= count:
        _, _, worker, free = ranked[0]
        return worker, tuple(free[:count])
    if not total:
        raise NoFreeGpus(f"No worker with GPUs can take a server right now (none is up, or none declares GPUs), so your server "
                         f"with {count} GPU(s) did not start. Please try again later or contact support.")
    most = -ranked[0][0] if ranked else 0
    raise NoFreeGpus(f"No worker has {count} free GPU(s) right now ({free_total} of {total} free; at most {most} on one worker), "
                     "so your server did not start. Please try again later or choose a profile with fewer GPUs.")
