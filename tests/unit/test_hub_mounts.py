"""Per-user mount rendering: values are sanitised and a rendered path never leaves its prefix."""

from __future__ import annotations

import pytest

from deployer_hub import mounts, paths

SPECS = ["/data/{tenant_id}/{username}:/home/jupyter/permanent:rw", "/work/{tas_homeDirectory}:/home/jupyter/tacc-work:rw",
         "/data/shared:/home/jupyter/shared:ro"]


def test_renders_every_variable() -> None:
    values = mounts.template_values("jdoe", "designsafe", "04/12345/jdoe")
    rendered = mounts.render(SPECS, values)
    assert [(m.source, m.target, m.read_only) for m in rendered] == [
        ("/data/designsafe/jdoe", "/home/jupyter/permanent", False),
        ("/work/04/12345/jdoe", "/home/jupyter/tacc-work", False),
        ("/data/shared", "/home/jupyter/shared", True),
    ]


@pytest.mark.parametrize("username", ["..", "../root", "a/b", "a\x00b", ".", "", "a\u2215b", "a\u2024\u2024", "ROOT/../x"])
def test_hostile_usernames_never_render(username: str) -> None:
    with pytest.raises((paths.UnsafeName, mounts.MountRenderError)):
        mounts.render(SPECS[:1], mounts.template_values(paths.normalize(username), "designsafe", None))


@pytest.mark.parametrize("home", ["../../etc", "/04/../../etc", "04/12345/..", "a/\x00/b", "a/b\u2215c"])
def test_hostile_tas_home_directories_never_render(home: str) -> None:
    with pytest.raises((paths.UnsafeName, mounts.MountRenderError)):
        mounts.render(SPECS[1:2], mounts.template_values("jdoe", "designsafe", home))


def test_tas_variable_without_tas_value_is_a_clear_error() -> None:
    with pytest.raises(mounts.MountRenderError, match="tas_homeDirectory"):
        mounts.render(SPECS[1:2], mounts.template_values("jdoe", "designsafe", None))


def test_every_mount_is_a_bind_mount_of_the_rendered_host_path() -> None:
    from deployer_hub.spawner import TenantSwarmSpawner

    bind = TenantSwarmSpawner()._docker_mount(mounts.RenderedMount("/corral/x", "/x", True))
    assert (bind["Type"], bind["Source"], bind["ReadOnly"]) == ("bind", "/corral/x", True)


def test_one_parser_for_validate_and_spawn() -> None:
    """The spawner renders with the parser validate uses: the same spellings mean the same paths."""
    rendered = mounts.render(["/data//{tenant_id}/./{username}/:/home/jupyter/./MyData:rw"], mounts.template_values("jdoe", "t", None))
    assert (rendered[0].source, rendered[0].target) == ("/data/t/jdoe", "/home/jupyter/MyData")
    assert mounts.parse("/data//{tenant_id}/./{username}/:/home/jupyter/./MyData:rw").host_path == "/data/{tenant_id}/{username}"
    with pytest.raises(mounts.MountError):
        mounts.render(["/data/{nope}:/x:rw"], {})
