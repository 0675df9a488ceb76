"""The NFS management cluster: the hub exports the deployment's share to the workers' addresses
only, and every worker mounts it at the same path, so token files and per-user directories the
hub writes are what the notebooks see.

``use_stock_nfs: true`` uses the kernel's server (``nfs-kernel-server``, /etc/exports.d);
false (the default) the user-space ``nfs-ganesha``. Both export the share under its own path
(NFSv4), so the workers' mount line is the same for either. A worker that already sees the
share (a site file system mounted there, or a mount made earlier) is left as it is: the hub
writes a marker file into the share and each worker is asked to read it back.

Pure functions: facts in, commands out. Secrets never pass through here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from deployer.config.hubsettings import Layout
from deployer.hosts.commands import Command, cmd, sh

GANESHA_MAIN = "/etc/ganesha/ganesha.conf"
GANESHA_DIR = "/etc/ganesha/deployer"
MANAGED = "# Managed by Deployer"
MARKER = ".deployer-share"


def ports(*, kernel: bool) -> tuple[int, ...]:
    """What the share's server listens on as deploy configures it, which no container may reach (the
    network guard's host rules): rpcbind (111) and NFS (2049); nfs-ganesha also RQUOTA (875: on by
    default, NFSv4 only or not), the kernel server also mountd, on the port distributions pin it to (20048)."""
    return (111, 2049, 20048) if kernel else (111, 875, 2049)


def export_id(name: str) -> int:
    """A stable export id per deployment (several deployments may share a hub)."""
    return 100 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 60000


def ganesha_export(layout: Layout, clients: list[str]) -> str:
    return (
        f"{MANAGED}: the share of {layout.name}, for its workers only.\n"
        "EXPORT {\n"
        f"    Export_Id = {export_id(layout.name)};\n"
        f"    Path = {layout.share_dir};\n"
        f"    Pseudo = {layout.share_dir};\n"
        "    Protocols = 4;\n"
        "    SecType = sys;\n"
        "    Access_Type = None;\n"
        "    Squash = Root_Squash;\n"
        f"    CLIENT {{ Clients = {', '.join(clients)}; Access_Type = RW; }}\n"
        "    FSAL { Name = VFS; }\n"
        "}\n"
    )


def ganesha_main(names: list[str]) -> str:
    """The server's main file: NFSv4 only, and one include per deployment exported here."""
    includes = "".join(f'%include "{GANESHA_DIR}/{n}.conf"\n' for n in sorted(set(names)))
    return (f"{MANAGED} (the packaged file is kept as ganesha.conf.deployer-orig).\n"
            "NFS_CORE_PARAM { Protocols = 4; }\n"
            # No grace period after a restart: a redeploy must not stall the notebooks' file access.
            "NFSV4 { Graceless = true; }\n" + includes)


def kernel_exports(layout: Layout, clients: list[str]) -> str:
    options = "rw,sync,no_subtree_check,root_squash"
    return f"{MANAGED}: the share of {layout.name}, for its workers only.\n{layout.share_dir} " + " ".join(f"{c}({options})" for c in clients) + "\n"


def kernel_exports_file(layout: Layout) -> str:
    return f"/etc/exports.d/deployer-{layout.name}.exports"


@dataclass
class ServerFacts:
    """The hub's NFS server, as read before planning."""

    installed: bool = False  # ganesha.nfsd / exportfs present
    running: bool = False
    systemd: bool = False
    export: str | None = None  # our export file's content
    main: str | None = None  # ganesha.conf's content
    exported: tuple[str, ...] = ()  # deployments with a file in GANESHA_DIR

    @classmethod
    def read(cls, ex, layout: Layout, kernel: bool) -> "ServerFacts":
        path = kernel_exports_file(layout) if kernel else f"{GANESHA_DIR}/{layout.name}.conf"
        probe = "command -v exportfs" if kernel else "command -v ganesha.nfsd"
        # Listening, not just a process: where no init reaps them, dead daemons linger as zombies.
        running = "cat /proc/fs/nfsd/threads 2>/dev/null | grep -qv '^0$'" if kernel else "ss -Hltn | grep -q ':2049 '"
        script = (f'{probe} >/dev/null && echo installed; {running} >/dev/null && echo running; '
                  '[ -d /run/systemd/system ] && echo systemd; '
                  f'ls {GANESHA_DIR} 2>/dev/null | sed -n "s/\\.conf$//p" | sed "s/^/exported /"; '
                  f'echo "--- export"; cat "{path}" 2>/dev/null; echo "--- main"; cat {GANESHA_MAIN} 2>/dev/null; true')
        text = ex.run(sh(script)).stdout
        head, _, rest = text.partition("--- export\n")
        export, _, main = rest.partition("--- main\n")
        flags = head.split("\n")
        return cls(installed="installed" in flags, running="running" in flags, systemd="systemd" in flags,
                   export=export or None, main=main or None,
                   exported=tuple(line.split(" ", 1)[1] for line in flags if line.startswith("exported ")))


def served(layout: Layout, clients: list[str], facts: ServerFacts, *, kernel: bool) -> ServerFacts:
    """The server's facts as server_commands leave them."""
    if kernel:
        return ServerFacts(True, True, facts.systemd, kernel_exports(layout, clients), facts.main, facts.exported)
    exported = tuple(sorted({*facts.exported, layout.name}))
    return ServerFacts(True, True, facts.systemd, ganesha_export(layout, clients), ganesha_main(list(exported)), exported)


def _write(path: str, content: str, why: str, mode: str = "0644") -> Command:
    return sh(f'set -e; mkdir -p "$(dirname "$1")"; tmp="$1.deployer-new"; cat >"$tmp"; chmod {mode} "$tmp"; mv "$tmp" "$1"',
              path, input=content.encode(), why=why)


def _apt(*packages: str, why: str) -> Command:
    return sh('export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends "$@"',
              *packages, why=why)


#: Marker files (prefix) of the helpers ganesha_start started on a host without an init system.
STARTED = "/var/run/ganesha/deployer-started-"


def ganesha_start(systemd: bool) -> Command:
    if systemd:
        return sh("systemctl enable nfs-ganesha >/dev/null 2>&1; systemctl restart nfs-ganesha", why="(re)start nfs-ganesha")
    # No init system (containers, the lab): ganesha's helpers first, then the daemon itself.
    return sh(
        "set -e; mkdir -p /var/run/ganesha /var/log/ganesha /run/dbus\n"
        # Helpers started here are marked, so that destroy stops only what deploy started. Only live
        # processes count (-r: a killed daemon nobody reaps stays a zombie), and a dead dbus leaves its pid file.
        f"pgrep -x -r R,S,D rpcbind >/dev/null || {{ rpcbind -w && touch {STARTED}rpcbind; }}\n"
        f"pgrep -x -r R,S,D dbus-daemon >/dev/null || {{ rm -f /run/dbus/pid; dbus-daemon --system --fork && touch {STARTED}dbus-daemon; }}\n"
        "if pkill -x ganesha.nfsd; then for i in $(seq 100); do ss -Hltn | grep -q ':2049 ' || break; sleep 0.2; done; fi\n"
        f"setsid ganesha.nfsd -L /var/log/ganesha/ganesha.log -f {GANESHA_MAIN} -p /var/run/ganesha/ganesha.pid </dev/null >/dev/null 2>&1\n"
        "for i in $(seq 100); do ss -Hltn | grep -q ':2049 ' && exit 0; sleep 0.3; done\n"
        "echo 'nfs-ganesha did not listen on 2049 within 30 s:' >&2; tail -n 5 /var/log/ganesha/ganesha.log >&2; exit 1",
        why="(re)start nfs-ganesha",
    )


def server_commands(layout: Layout, clients: list[str], facts: ServerFacts, *, kernel: bool) -> list[Command]:
    """Install the server if missing, write our export, and (re)start only when something changed."""
    commands: list[Command] = []
    if not facts.installed:
        packages = ("nfs-kernel-server",) if kernel else ("nfs-ganesha", "nfs-ganesha-vfs")
        commands.append(_apt(*packages, why="install the NFS server"))
    if kernel:
        wanted = kernel_exports(layout, clients)
        if facts.export != wanted:
            commands.append(_write(kernel_exports_file(layout), wanted, why="export the share to the workers"))
        if not facts.running:
            commands.append(sh("systemctl enable --now nfs-server 2>/dev/null || service nfs-kernel-server start", why="start the NFS server"))
        if facts.export != wanted or not facts.running:
            commands.append(cmd("exportfs", "-ra", why="apply the exports"))
        return commands
    changed = False
    wanted = ganesha_export(layout, clients)
    if facts.export != wanted:
        commands.append(_write(f"{GANESHA_DIR}/{layout.name}.conf", wanted, why="export the share to the workers"))
        changed = True
    main = ganesha_main([*facts.exported, layout.name])
    if facts.main != main:
        if facts.main is None or not facts.main.startswith(MANAGED):
            # Decided when it runs: a server installed by this very run has its packaged file only then.
            commands.append(sh('if [ -e "$1" ] && ! head -n 1 "$1" | grep -qF "$2"; then cp -n "$1" "$1.deployer-orig"; fi',
                               GANESHA_MAIN, MANAGED.splitlines()[0], why="keep the packaged ganesha.conf"))
        commands.append(_write(GANESHA_MAIN, main, why="ganesha's main configuration"))
        changed = True
    if changed or not facts.running:
        commands.append(ganesha_start(facts.systemd))
    return commands


def unexport_commands(layout: Layout, facts: ServerFacts, *, kernel: bool) -> list[Command]:
    """Remove our export; stop the server when no deployment is exported any more."""
    if kernel:
        if facts.export is None:
            return []
        return [cmd("rm", "-f", kernel_exports_file(layout), why="remove the share's export"), cmd("exportfs", "-ra", why="apply the exports")]
    others = [n for n in facts.exported if n != layout.name]
    commands: list[Command] = []
    if facts.export is not None:
        commands.append(cmd("rm", "-f", f"{GANESHA_DIR}/{layout.name}.conf", why="remove the share's export"))
    if others:
        if facts.export is not None:
            commands += [_write(GANESHA_MAIN, ganesha_main(others), why="ganesha's main configuration"), ganesha_start(facts.systemd)]
        return commands
    if facts.running:
        stop = "systemctl stop nfs-ganesha" if facts.systemd else (
            "pkill -x ganesha.nfsd; for i in $(seq 100); do ss -Hltn | grep -q ':2049 ' || break; sleep 0.2; done\n"
            f"for d in rpcbind dbus-daemon; do if [ -e {STARTED}$d ]; then pkill -x $d; rm -f {STARTED}$d; fi; done; true")
        commands.append(sh(stop, why="stop nfs-ganesha (nothing is exported any more)"))
    if facts.main is not None and facts.main.startswith(MANAGED):
        commands.append(sh(f'if [ -e {GANESHA_MAIN}.deployer-orig ]; then mv {GANESHA_MAIN}.deployer-orig {GANESHA_MAIN}; else rm -f {GANESHA_MAIN}; fi; '
                           f'rmdir {GANESHA_DIR} 2>/dev/null || true', why="restore the packaged ganesha.conf"))
    return commands


def read_marker(layout: Layout) -> Command:
    return sh('cat "$1" 2>/dev/null || true', f"{layout.share_dir}/{MARKER}")


def fstab_tag(layout: Layout) -> str:
    return f"# deployer: the share of {layout.name}"


def mount_commands(layout: Layout, server: str, *, has_client: bool) -> list[Command]:
    """Mount the hub's export at the share's path on a worker, now and at every boot."""
    share = layout.share_dir
    line = f"{server}:{share} {share} nfs4 rw,hard,noatime,_netdev 0 0"
    commands = [] if has_client else [_apt("nfs-common", why="install the NFS client")]
    commands.append(sh(
        'set -e; grep -vxF -e "$1" /etc/fstab | awk -v m="$3" \'$2 != m\' >/etc/fstab.deployer-new || true\n'
        'printf "%s\\n%s\\n" "$1" "$2" >>/etc/fstab.deployer-new; mv /etc/fstab.deployer-new /etc/fstab\n'
        'mkdir -p "$3"; mountpoint -q "$3" || mount "$3"',
        fstab_tag(layout), line, share, why=f"mount the share from the hub ({server}) on this worker"))
    return commands


def unmount_command(layout: Layout) -> Command:
    """Undo mount_commands: unmount and drop our fstab lines (only ours; nothing if none)."""
    return sh(
        'grep -qxF -e "$1" /etc/fstab 2>/dev/null || exit 0\n'
        'mountpoint -q "$2" && umount -l "$2"\n'
        'grep -vxF -e "$1" /etc/fstab | awk -v m="$2" \'$2 != m\' >/etc/fstab.deployer-new && mv /etc/fstab.deployer-new /etc/fstab && echo unmounted',
        fstab_tag(layout), layout.share_dir, why="unmount the share")
