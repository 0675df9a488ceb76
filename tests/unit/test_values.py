"""Single-value parsing: mounts, sizes, host names, certificate names."""

from __future__ import annotations

import pytest
from deployer_hub import mounts
from pydantic_core import PydanticCustomError

from deployer.config import certs
from deployer.config.values import parse_memory


def test_mount_parsing_keeps_parts_and_variables() -> None:
    m = mounts.parse("/corral-repl/tacc/NHERI/shared/{username}:/home/jupyter/MyData:rw")
    assert (m.host_path, m.container_path, m.mode, m.read_only) == ("/corral-repl/tacc/NHERI/shared/{username}", "/home/jupyter/MyData", "rw", False)
    assert m.variables == {"username"}
    m = mounts.parse("/work/{tas_homeDirectory}/{tenant_id}:/home/jupyter/tacc-work:ro")
    assert m.variables == {"tas_homeDirectory", "tenant_id"} and m.read_only


@pytest.mark.parametrize("bad", ["/a/{0}:/b:rw", "/a/{}:/b:rw", "/a/{username.__class__}:/b:rw", "/a/{username[0]}:/b:rw"])
def test_mount_templates_refuse_attribute_and_positional_tricks(bad: str) -> None:
    with pytest.raises(mounts.MountError):
        mounts.parse(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("3G", 3 * 1024**3), ("512M", 512 * 1024**2), ("512m", 512 * 1024**2), ("2GiB", 2 * 1024**3), ("1.5G", int(1.5 * 1024**3)),
     ("1T", 1024**4), (8 * 1024**2, 8 * 1024**2), ("10000000", 10_000_000), (None, None)],
)
def test_memory_sizes(text, size) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["lots", "3X", "G", "-1G", True, "1K", 1024])
def test_bad_memory_sizes(bad) -> None:
    with pytest.raises(PydanticCustomError):
        parse_memory(bad)


def test_certificate_name_matching() -> None:
    assert certs.covers(["jupyter.example.org"], "JUPYTER.example.org")
    assert certs.covers(["*.example.org"], "jupyter.example.org")
    assert not certs.covers(["*.example.org"], "a.b.example.org")
    assert not certs.covers(["*.example.org"], "example.org")
    assert certs.covers(["127.0.0.1"], "127.0.0.1")
    assert not certs.covers(["jupyter.example.org"], "127.0.0.1")
