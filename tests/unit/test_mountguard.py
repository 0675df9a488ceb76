"""The mount guard's decisions (deployer_hub.mountguard), on real directories and links in a temporary
directory: a source is reached from its anchor without following any link, whoever made it, and only the
mounts the configuration gives are made (read-only where any rule says so). The kernel's mount calls are
the only thing replaced here (they need root and a real engine: the swarm and lab tiers make them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import SCOPE, base_configs
from deployer_hub import mountguard
from deployer_hub.mounts import pattern
from unit.plans import deployment_of

from deployer.config.hubsettings import Layout
from deployer.phases import mountguard as deploy_guard


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """alice's data directory and her named server's, bob's, a shared read-only directory and the token root."""
    root = tmp_path / "share"
    for d in ("data/sim/alice/x", "data/sim/bob", "shared", "tokens/sim/bob"):
        (root / d).mkdir(parents=True)
    (root / "tokens/sim/bob/current").write_text("bob's token")
    return root


def rules(share: Path) -> tuple[mountguard.Rule, ...]:
    fixed = {"tenant_id": "sim"}
    return (mountguard.Rule(pattern(f"{share}/data/{{tenant_id}}/{{username}}/{{servername}}", fixed), pattern("/home/jupyter/work"), str(share)),
            mountguard.Rule(pattern(f"{share}/shared"), pattern("/home/jupyter/shared"), str(share), read_only=True),
            mountguard.Rule(pattern(f"{share}/tokens/{{tenant_id}}/{{username}}", fixed), pattern("/home/jupyter/.agave"), str(share)))


# --- reaching a source -------------------------------------------------------------------------


def test_a_real_directory_is_opened_below_its_anchor(share: Path) -> None:
    fd = mountguard.open_beneath(str(share), f"{share}/data/sim/alice/x")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(share / "data/sim/alice/x"))
    finally:
        os.close(fd)


@pytest.mark.parametrize("target", ["/", "../bob", "{share}/tokens/sim/bob", "/var/run", "nowhere"])
def test_a_link_the_user_planted_is_never_followed(share: Path, target: str) -> None:
    """alice replaces her named server's directory with a link (to /, to bob, to bob's tokens, to the Docker
    socket's directory, dangling): refused, whatever it points at."""
    (share / "data/sim/alice/x").rmdir()
    (share / "data/sim/alice/x").symlink_to(target.format(share=share))
    with pytest.raises(mountguard.Refused, match=r"/data/sim/alice/x is a symbolic link"):
        mountguard.open_beneath(str(share), f"{share}/data/sim/alice/x")


def test_a_link_anywhere_on_the_way_is_refused_not_only_the_last(share: Path) -> None:
    (share / "data/sim/carol").symlink_to(share / "data/sim/alice")  # carol's directory is a link to alice's (a hub could make it)
    with pytest.raises(mountguard.Refused, match=r"/data/sim/carol is a symbolic link"):
        mountguard.open_beneath(str(share), f"{share}/data/sim/carol/x")


def test_the_anchor_itself_is_opened_as_the_operator_wrote_it(share: Path, tmp_path: Path) -> None:
    """A site directory may be a link the site made (/work -> /gpfs/work): only what lies below it is untrusted."""
    (tmp_path / "work").symlink_to(share / "data")
    fd = mountguard.open_beneath(str(tmp_path / "work"), f"{tmp_path}/work/sim/bob")
    os.close(fd)


def test_missing_and_odd_sources_are_named(share: Path) -> None:
    with pytest.raises(mountguard.Refused, match=r"/data/sim/dave does not exist"):
        mountguard.open_beneath(str(share), f"{share}/data/sim/dave")
    with pytest.raises(mountguard.Refused, match="is not a directory"):
        mountguard.open_beneath(str(share), f"{share}/tokens/sim/bob/current/x")
    with pytest.raises(mountguard.Refused, match="is not below"):
        mountguard.open_beneath(str(share / "data"), f"{share}/tokens/sim/bob")


def test_directories_are_made_below_the_anchor_without_following_links(share: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    made = mountguard.make_dirs_beneath(str(share), f"{share}/data/sim/erin/projects", 0o750, uid, gid)
    assert made == [f"{share}/data/sim/erin", f"{share}/data/sim/erin/projects"]
    assert (share / "data/sim/erin/projects").stat().st_mode & 0o777 == 0o750
    assert mountguard.make_dirs_beneath(str(share), f"{share}/data/sim/erin/projects", 0o750, uid, gid) == []  # there already
    # A link where a directory is expected: nothing is made through it (the hub would otherwise chown what it points at).
    (share / "data/sim/frank").symlink_to(share / "tokens/sim/bob")
    with pytest.raises(mountguard.Refused, match="frank is a symbolic link"):
        mountguard.make_dirs_beneath(str(share), f"{share}/data/sim/frank/new", 0o750, uid, gid)
    assert not (share / "tokens/sim/bob/new").exists()


# --- which mounts, and how --------------------------------------------------------------------


def test_only_the_configured_mounts_and_read_only_wins(share: Path) -> None:
    r = rules(share)
    assert mountguard.placement(r, f"{share}/data/sim/alice") == (str(share), False)
    assert mountguard.placement(r, f"{share}/data/sim/alice/x") == (str(share), False)
    assert mountguard.placement(r, f"{share}/shared") == (str(share), True)
    # A writable rule that also covers a read-only source: read-only wins (a user named like the shared directory).
    both = (*r, mountguard.Rule(pattern(f"{share}/{{username}}"), "/.*", str(share)))
    assert mountguard.placement(both, f"{share}/shared") == (str(share), True)
    for source in (f"{share}/data/other/alice", f"{share}/data/sim/alice/x/deeper", f"{share}/tokens/sim", "/etc", f"{share}/data/sim/../../etc",
                   f"{share}//data/sim/alice", "relative/path", f"{share}/data/sim/alice/"):
        with pytest.raises(mountguard.Refused):
            mountguard.placement(r, source)


def test_a_volume_name_is_the_hash_of_its_source_so_it_cannot_be_repointed() -> None:
    assert mountguard.volume_name("dep", "/a") == mountguard.volume_name("dep", "/a") != mountguard.volume_name("dep", "/b")
    assert mountguard.volume_name("dep", "/a") != mountguard.volume_name("other", "/a")


class RecordingKernel:
    """mount(2) and umount2(2) as calls recorded (the real ones need root and an engine: swarm and lab tiers)."""

    def __init__(self) -> None:
        self.bound: dict[str, tuple[os.stat_result, bool]] = {}

    def bind(self, fd: int, target: str, read_only: bool) -> None:
        self.bound[target] = (os.fstat(fd), read_only)

    def unmount(self, target: str) -> None:
        del self.bound[target]


def guard(share: Path, tmp_path: Path) -> tuple[mountguard.Guard, RecordingKernel]:
    policy = mountguard.Policy("dep", rules(share), staging=str(tmp_path / "staging"), state=str(tmp_path / "state" / "volumes.json"))
    kernel = RecordingKernel()
    return mountguard.Guard(policy, kernel), kernel  # type: ignore[arg-type]


def create(g: mountguard.Guard, source: str) -> str:
    name = mountguard.volume_name("dep", source)
    assert mountguard.dispatch(g, "/VolumeDriver.Create", {"Name": name, "Opts": {"source": source}}) == {"Err": ""}
    return name


def test_the_volume_driver_binds_the_opened_directory_read_only_where_configured(share: Path, tmp_path: Path) -> None:
    g, kernel = guard(share, tmp_path)
    work, shared = create(g, f"{share}/data/sim/alice/x"), create(g, f"{share}/shared")
    first = mountguard.dispatch(g, "/VolumeDriver.Mount", {"Name": work, "ID": "ab" * 32})
    second = mountguard.dispatch(g, "/VolumeDriver.Mount", {"Name": shared, "ID": "cd" * 32})
    assert first["Err"] == second["Err"] == ""
    assert first["Mountpoint"].startswith(f"{tmp_path}/staging/{work}/")
    stat, read_only = kernel.bound[first["Mountpoint"]]
    assert os.path.samestat(stat, os.stat(share / "data/sim/alice/x")) and not read_only
    assert kernel.bound[second["Mountpoint"]][1] is True
    # Kept across a restart of the guard: the engine mounts a volume it made earlier by its name alone.
    assert json.loads((tmp_path / "state/volumes.json").read_text())[work] == f"{share}/data/sim/alice/x"
    assert mountguard.Guard(g.policy, RecordingKernel()).volumes == g.volumes  # type: ignore[arg-type]
    assert mountguard.dispatch(g, "/VolumeDriver.Unmount", {"Name": work, "ID": "ab" * 32}) == {"Err": ""}
    assert first["Mountpoint"] not in kernel.bound and not os.path.exists(first["Mountpoint"])


def test_a_link_planted_after_the_volume_was_made_is_refused_at_the_next_mount(share: Path, tmp_path: Path) -> None:
    """Every start of a task mounts again, on its worker: the check is there, not only at the hub's spawn."""
    g, kernel = guard(share, tmp_path)
    name = create(g, f"{share}/data/sim/alice/x")
    assert mountguard.dispatch(g, "/VolumeDriver.Mount", {"Name": name, "ID": "01" * 32})["Err"] == ""
    (share / "data/sim/alice/x").rename(share / "data/sim/alice/x.old")
    (share / "data/sim/alice/x").symlink_to("/")
    answer = mountguard.dispatch(g, "/VolumeDriver.Mount", {"Name": name, "ID": "02" * 32})
    assert answer["Err"] == f"{mountguard.REFUSED} {share}/data/sim/alice/x: {share}/data/sim/alice/x is a symbolic link (storage is never mounted through a link)"
    assert len(kernel.bound) == 1  # the first container's mount only


@pytest.mark.parametrize(("name", "opts", "error"), [
    ("dep-mnt-x", {"source": "/etc"}, "not a directory this deployment mounts"),
    (None, {"source": "{share}/shared", "o": "bind"}, "one option"),
    (None, {}, "one option"),
    ("dep-mnt-0123", {"source": "{share}/shared"}, "is not the volume of"),  # a name made for another source
])
def test_the_driver_refuses_volumes_the_configuration_does_not_give(share: Path, tmp_path: Path, name, opts, error) -> None:
    g, _ = guard(share, tmp_path)
    opts = {k: v.format(share=share) for k, v in opts.items()}
    name = name or mountguard.volume_name("dep", opts.get("source", ""))
    answer = mountguard.dispatch(g, "/VolumeDriver.Create", {"Name": name, "Opts": opts})
    assert error in answer["Err"] and answer["Err"].startswith(mountguard.REFUSED)
    assert mountguard.dispatch(g, "/VolumeDriver.Mount", {"Name": name, "ID": "ab" * 32})["Err"].endswith(f"no volume {name}")


def test_the_policy_deploy_writes_for_the_guard(site) -> None:
    configs = base_configs()
    configs[SCOPE]["volume_mounts"] = ["/data/{tenant_id}/{username}:/home/jupyter/permanent:rw", "/srv/shared:/home/jupyter/shared:ro"]
    d = deployment_of(site(configs=configs))
    layout = Layout.of(d)
    policy = mountguard.Policy.from_json(deploy_guard.policy(d, layout).to_json())
    assert policy.driver == f"{layout.name}-mounts" and policy.staging == f"/run/deployer/{layout.name}/mounts"
    assert policy.placement("/data/designsafe/jdoe") == ("/data", False)
    assert policy.placement("/srv/shared") == ("/srv/shared", True)
    argv = deploy_guard.sidecar(d, layout, "sha256:g").run("x").argv
    assert argv[argv.index("--network") + 1] == "none" and "--privileged" not in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"] == list(deploy_guard.CAPABILITIES)
    assert argv[-2:] == (d.config.network_guard_image, mountguard.AGENT)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a directory's owner is what root does (the guard runs as root)")
def test_a_directory_root_may_not_pass_is_passed_as_its_owner(share: Path) -> None:
    """Over NFS with root squashed, root is nobody to the server: alice's 0750 directory lets only her through.
    The guard then looks up the next component as the directory's owner. Modelled here by taking away the
    capability that lets root pass (DAC_READ_SEARCH and DAC_OVERRIDE), in a child process."""
    import subprocess
    import sys

    alice = share / "data/sim/alice"
    os.chown(alice, 5003, 6003)
    alice.chmod(0o750)
    script = ("import ctypes, os, sys; sys.path.insert(0, sys.argv[2]); from deployer_hub import mountguard\n"
              "libc = ctypes.CDLL(None, use_errno=True)\n"
              "for cap in (1, 2): assert libc.prctl(24, cap, 0, 0, 0) == 0  # PR_CAPBSET_DROP: no DAC_OVERRIDE, no DAC_READ_SEARCH\n"
              "hdr = (ctypes.c_uint32 * 2)(0x20080522, 0); data = (ctypes.c_uint32 * 6)()\n"
              "assert libc.capget(hdr, data) == 0\n"
              "data[0] &= ~0b110; data[1] &= ~0b110  # effective and permitted, low word\n"
              "assert libc.capset(hdr, data) == 0\n"
              "try:\n    os.open(sys.argv[1] + '/x', os.O_PATH)\nexcept PermissionError:\n    print('root refused')\n"
              "os.close(mountguard.open_beneath(sys.argv[3], sys.argv[1] + '/x')); print('opened as owner')\n")
    done = subprocess.run([sys.executable, "-c", script, str(alice), str(Path(mountguard.__file__).parents[1]), str(share)],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split("\n")[:2] == ["root refused", "opened as owner"], done.stderr


def test_the_guard_names_its_volumes_for_their_removal(share: Path, tmp_path: Path, monkeypatch, capsys, site) -> None:
    """`deployer destroy` asks the guard for its volumes' names (`--volumes`) rather than listing every driver's:
    the engine asks each driver it ever knew, and one whose guard is gone makes it wait 15 s."""
    g, _ = guard(share, tmp_path)
    names = sorted(create(g, f"{share}/data/sim/{user}/x") for user in ("alice", "bob"))
    monkeypatch.setenv(mountguard.POLICY_ENV, g.policy.to_json())
    monkeypatch.setenv("DEPLOYER_MOUNTGUARD_NAMESPACE", "none")
    assert mountguard.main(["--volumes"]) == 0
    assert capsys.readouterr().out.split() == names
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())  # nothing served or cleaned
    command = deploy_guard.remove_command(Layout.of(deployment_of(site(configs=base_configs()))))
    assert command.argv[-1] == mountguard.AGENT and "--volumes" in command.argv[2]


def test_the_engine_is_the_process_serving_the_socket_not_any_process_of_its_name(tmp_path: Path) -> None:
    """Two processes of the same name (on a host: its dockerd and the engines of Docker-in-Docker containers,
    whose roots all seem to hold our socket through /var/run -> /run): the guard's engine is the one that
    listens on its socket."""
    import subprocess
    import sys
    import time

    path = tmp_path / "engine.sock"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = subprocess.Popen([sys.executable, "-c", "import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\n"
                               "s.bind(sys.argv[1]); s.listen(1); time.sleep(60)", str(path)])
    try:
        for _ in range(200):  # until it listens (bounded)
            if path.exists():
                break
            time.sleep(0.05)
        name = mountguard._comm(server.pid)
        assert mountguard._comm(other.pid) == name and other.pid < server.pid
        assert mountguard.engine_pid(str(path), name=name) == server.pid
    finally:
        for child in (server, other):
            child.kill()
            child.wait()
