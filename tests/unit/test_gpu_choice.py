"""Which worker and devices a GPU notebook gets (deployer_hub.gpus): from the swarm's node descriptions
and the deployment's services' labels, never from Swarm's reservations."""

from __future__ import annotations

import pytest
from deployer_hub import gpus


def node(node_id: str, host: str, *, named=(), count=None, state="ready", availability="active", worker=True) -> dict:
    resources = [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": v}} for v in named]
    resources.append({"NamedResourceSpec": {"Kind": "FPGA", "Value": "fpga-0"}})  # another kind: not a GPU
    if count is not None:
        resources.append({"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": count}})
    return {"ID": node_id, "Spec": {"Availability": availability, "Labels": {"deployer.worker": "true"} if worker else {}},
            "Status": {"State": state}, "Description": {"Hostname": host, "Resources": {"GenericResources": resources}}}


def service(label: str | None) -> dict:
    return {"Spec": {"Labels": {gpus.LABEL: label} if label is not None else {}}}


def test_the_inventory_is_a_ready_active_workers_declared_gpus() -> None:
    assert gpus.inventory(node("n1", "w1", named=["GPU-b", "GPU-a"])) == gpus.Worker("n1", "w1", ("GPU-a", "GPU-b"))
    assert gpus.inventory(node("n2", "w2", count=3)) == gpus.Worker("n2", "w2", ("0", "1", "2"))  # a count: device indexes
    for gone in (node("n3", "w3", named=["G"], state="down"), node("n4", "w4", named=["G"], availability="drain"),
                 node("n5", "w5", named=["G"], worker=False), node("n6", "w6")):
        assert gpus.inventory(gone) is None


def test_the_devices_held_are_read_from_the_services_labels() -> None:
    held = gpus.in_use([service("n1:GPU-a"), service("n1:GPU-b,GPU-c"), service("n2:0"), service(None), service("garbage"), service("")])
    assert held == {"n1": {"GPU-a", "GPU-b", "GPU-c"}, "n2": {"0"}}


def test_the_worker_with_the_most_free_gpus_gets_the_server() -> None:
    w1, w2 = gpus.Worker("n1", "w1", ("A", "B")), gpus.Worker("n2", "w2", ("C", "D", "E"))
    assert gpus.choose([w1, w2], {}, 1) == (w2, ("C",))
    assert gpus.choose([w1, w2], {"n2": {"C", "D"}}, 1) == (w1, ("A",))
    assert gpus.choose([w1, w2], {"n1": {"A"}}, 2) == (w2, ("C", "D"))
    assert gpus.choose([w1, w2], {"n2": {"D"}}, 2) == (w1, ("A", "B"))  # ties by name; free devices in order


@pytest.mark.parametrize(("held", "count", "message"), [
    ({"n1": {"A", "B"}, "n2": {"C"}}, 1, r"No worker has 1 free GPU\(s\) right now \(0 of 3 free"),
    ({"n1": {"A"}}, 2, r"No worker has 2 free GPU\(s\) right now \(2 of 3 free; at most 1 on one worker\)"),  # never split across workers
])
def test_no_room_is_told_with_how_things_stand(held: dict, count: int, message: str) -> None:
    with pytest.raises(gpus.NoFreeGpus, match=message):
        gpus.choose([gpus.Worker("n1", "w1", ("A", "B")), gpus.Worker("n2", "w2", ("C",))], held, count)


def test_no_worker_with_gpus_is_told_so() -> None:
    with pytest.raises(gpus.NoFreeGpus, match="No worker with GPUs can take a server right now"):
        gpus.choose([], {}, 1)


def test_only_this_deployments_workers_are_in_its_inventory() -> None:
    """Workers carry a label unique to their deployment (and the common deployer.worker): another deployment's worker
    sharing the swarm is not where this hub places a GPU server."""
    ours, theirs = node("n1", "w1", named=["GPU-a"]), node("n2", "w2", named=["GPU-b"])
    ours["Spec"]["Labels"]["deployer.worker.jh-prod-x"] = "true"
    theirs["Spec"]["Labels"]["deployer.worker.jh-prod-y"] = "true"
    assert gpus.inventory(ours, "deployer.worker.jh-prod-x") == gpus.Worker("n1", "w1", ("GPU-a",))
    assert gpus.inventory(theirs, "deployer.worker.jh-prod-x") is None
