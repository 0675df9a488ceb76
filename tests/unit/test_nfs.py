"""The NFS management cluster's plan: exports limited to the workers, nothing restarted when
nothing changed, the packaged configuration kept, mounts that survive a reboot."""

from __future__ import annotations

import subprocess

from deployer.config.hubsettings import Layout
from deployer.phases import nfs

LAYOUT = Layout("jupyterhub-prod-designsafe")
WORKERS = ["10.0.0.2", "10.0.0.3"]


def ready(kernel: bool = False) -> nfs.ServerFacts:
    if kernel:
        return nfs.ServerFacts(installed=True, running=True, export=nfs.kernel_exports(LAYOUT, WORKERS))
    return nfs.ServerFacts(installed=True, running=True, export=nfs.ganesha_export(LAYOUT, WORKERS),
                           main=nfs.ganesha_main([LAYOUT.name]), exported=(LAYOUT.name,))


def test_ganesha_export_is_for_the_workers_only_and_squashes_root() -> None:
    text = nfs.ganesha_export(LAYOUT, WORKERS)
    assert "Clients = 10.0.0.2, 10.0.0.3; Access_Type = RW;" in text
    assert "Access_Type = None;" in text  # anyone else: nothing
    assert f"Path = {LAYOUT.share_dir};" in text and f"Pseudo = {LAYOUT.share_dir};" in text
    assert "Squash = Root_Squash;" in text


def test_kernel_exports_line() -> None:
    assert nfs.kernel_exports(LAYOUT, WORKERS).splitlines()[1] == (
        f"{LAYOUT.share_dir} 10.0.0.2(rw,sync,no_subtree_check,root_squash) 10.0.0.3(rw,sync,no_subtree_check,root_squash)")


def test_fresh_hub_gets_the_server_installed_configured_and_started() -> None:
    whys = [c.why for c in nfs.server_commands(LAYOUT, WORKERS, nfs.ServerFacts(main="# the packaged file\n"), kernel=False)]
    assert whys == ["install the NFS server", "export the share to the workers", "keep the packaged ganesha.conf",
                    "ganesha's main configuration", "(re)start nfs-ganesha"]
    kernel = [c.why for c in nfs.server_commands(LAYOUT, WORKERS, nfs.ServerFacts(), kernel=True)]
    assert kernel == ["install the NFS server", "export the share to the workers", "start the NFS server", "apply the exports"]


def test_nothing_changes_or_restarts_when_everything_is_in_place() -> None:
    assert nfs.server_commands(LAYOUT, WORKERS, ready(), kernel=False) == []
    assert nfs.server_commands(LAYOUT, WORKERS, ready(kernel=True), kernel=True) == []


def test_a_new_worker_changes_the_export_and_restarts_only_then() -> None:
    whys = [c.why for c in nfs.server_commands(LAYOUT, [*WORKERS, "10.0.0.4"], ready(), kernel=False)]
    assert whys == ["export the share to the workers", "(re)start nfs-ganesha"]
    whys = [c.why for c in nfs.server_commands(LAYOUT, [*WORKERS, "10.0.0.4"], ready(kernel=True), kernel=True)]
    assert whys == ["export the share to the workers", "apply the exports"]


def test_another_deployments_export_is_kept() -> None:
    facts = ready()
    facts.exported = (LAYOUT.name, "jupyterhub-prod-sd2e")
    facts.main = nfs.ganesha_main(list(facts.exported))
    assert nfs.server_commands(LAYOUT, WORKERS, facts, kernel=False) == []
    undo = nfs.unexport_commands(LAYOUT, facts, kernel=False)
    assert [c.why for c in undo] == ["remove the share's export", "ganesha's main configuration", "(re)start nfs-ganesha"]
    assert '%include "/etc/ganesha/deployer/jupyterhub-prod-sd2e.conf"' in undo[1].input.decode()
    assert LAYOUT.name not in undo[1].input.decode()


def test_the_last_export_stops_the_server_and_restores_the_packaged_file() -> None:
    assert [c.why for c in nfs.unexport_commands(LAYOUT, ready(), kernel=False)] == [
        "remove the share's export", "stop nfs-ganesha (nothing is exported any more)", "restore the packaged ganesha.conf"]


def test_export_ids_are_stable_and_differ_between_deployments() -> None:
    assert nfs.export_id(LAYOUT.name) == nfs.export_id(LAYOUT.name)
    assert nfs.export_id(LAYOUT.name) != nfs.export_id("jupyterhub-prod-sd2e")


def test_mounting_edits_fstab_once_and_unmounting_removes_only_our_lines(tmp_path) -> None:
    """The worker's fstab edit, run for real by sh on a copy of an fstab."""
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=abc / ext4 defaults 0 1\n")
    mount = nfs.mount_commands(LAYOUT, "10.0.0.1", has_client=True)
    assert len(mount) == 1 and mount[0].why.startswith("mount the share from the hub")
    script = mount[0].argv[2].replace("/etc/fstab", str(fstab)).replace('mkdir -p "$3"; mountpoint -q "$3" || mount "$3"', "true")
    for _ in range(2):  # idempotent
        subprocess.run(["sh", "-c", script, "sh", *mount[0].argv[4:]], check=True)
    lines = fstab.read_text().splitlines()
    assert lines == ["UUID=abc / ext4 defaults 0 1", nfs.fstab_tag(LAYOUT),
                     f"10.0.0.1:{LAYOUT.share_dir} {LAYOUT.share_dir} nfs4 rw,hard,noatime,_netdev 0 0"]
    undo = nfs.unmount_command(LAYOUT)
    script = undo.argv[2].replace("/etc/fstab", str(fstab)).replace('mountpoint -q "$2" && umount -l "$2"', "true")
    result = subprocess.run(["sh", "-c", script, "sh", *undo.argv[4:]], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "unmounted"
    assert fstab.read_text().splitlines() == ["UUID=abc / ext4 defaults 0 1"]
    assert nfs.mount_commands(LAYOUT, "10.0.0.1", has_client=False)[0].why == "install the NFS client"


def test_the_packaged_ganesha_conf_is_kept_even_when_this_run_installs_the_server(tmp_path) -> None:
    """Planned before apt installed the package (no ganesha.conf then), the backup still decides when it
    runs, so destroy puts Debian's file back instead of deleting it (run for real on a copy)."""
    fresh = nfs.server_commands(LAYOUT, WORKERS, nfs.ServerFacts(), kernel=False)
    backup = next(c for c in fresh if c.why == "keep the packaged ganesha.conf")
    assert [c.why for c in fresh].index("keep the packaged ganesha.conf") < [c.why for c in fresh].index("ganesha's main configuration")
    conf = tmp_path / "ganesha.conf"

    def run() -> None:
        subprocess.run(["sh", "-c", backup.argv[2], "sh", str(conf), *backup.argv[5:]], check=True)

    run()  # no file: nothing to keep
    assert not (tmp_path / "ganesha.conf.deployer-orig").exists()
    conf.write_text("# the packaged file\n")  # apt installed it in the meantime
    run()
    assert (tmp_path / "ganesha.conf.deployer-orig").read_text() == "# the packaged file\n"
    conf.write_text(nfs.ganesha_main([LAYOUT.name]))  # ours, on a later run: the backup is left alone
    run()
    assert (tmp_path / "ganesha.conf.deployer-orig").read_text() == "# the packaged file\n"


def test_stopping_the_last_export_stops_only_the_helpers_deploy_started() -> None:
    stop = next(c for c in nfs.unexport_commands(LAYOUT, ready(), kernel=False) if c.why.startswith("stop nfs-ganesha"))
    assert f"[ -e {nfs.STARTED}$d ]" in stop.argv[2] and "pkill -x $d" in stop.argv[2]
    start = nfs.ganesha_start(systemd=False).argv[2]
    assert f"rpcbind -w && touch {nfs.STARTED}rpcbind" in start and f"--fork && touch {nfs.STARTED}dbus-daemon" in start
    assert "pgrep -x -r R,S,D rpcbind" in start  # a zombie of a killed one (no init to reap it) is not a running one
