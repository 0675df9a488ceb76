"""The mount guard: a notebook's storage is mounted only as the directory it names, never through a link.

Why: the engine resolves a bind mount's source on the worker, following symbolic links, at every start
of the task. A notebook user can make links wherever she can write (her own directory on the share, her
TAS home, a project); a compromised hub can write anywhere on the share. A source that passes through
such a directory (``/data/alice/x`` for alice's named server ``x``, with ``/data/alice`` mounted in her
default server) could be made to lead to ``/``, to another user's files or to the host's Docker socket
between any check and the engine's bind.

So notebooks get no bind mounts (the hub's Docker proxy refuses them). Each mount is a volume of this
driver, a Docker volume plugin (the legacy kind: a unix socket in ``/run/docker/plugins``) that runs on
every worker in the host's mount namespace. When the engine mounts a volume for a container, the guard

* checks the source (the volume's ``source`` option) against its policy, written by deploy, not by the
  hub: a rendering of one of the configuration's mounts, read-only where any of them is read-only;
* opens the mount's anchor (the share, or a site directory the operator named) as the operator wrote it,
  then every further component with ``O_NOFOLLOW``, holding each directory open: a component that is a
  symbolic link is refused, whoever made it, and no rename after the check can change what was opened;
* binds the opened directory itself (``/proc/self/fd/N``) onto a root-only staging path under
  ``/run/deployer/<deployment>/mounts`` and gives the engine that path, which no user can change.

This happens on the worker that runs the task, at every start of it. A refusal fails the task with the
guard's reason, which the spawner shows the user, naming the mount.

The volume's name is a hash of its source (:func:`volume_name`): a name always means one source, so a
volume made earlier cannot be reused with another source. Standard library only: this file is the agent
(``python3 mountguard.py``, in the guards' image) and the hub and the CLI import its pure parts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import http.client
import http.server
import json
import os
import posixpath
import re
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass

POLICY_ENV = "DEPLOYER_MOUNTGUARD_POLICY"
#: This file in the guards' image (images/netguard), run by python3.
AGENT = "/usr/local/lib/deployer/mountguard.py"
PLUGIN_DIR = "/run/docker/plugins"
#: The volume option that carries a mount's source path.
SOURCE_OPTION = "source"
#: How a refusal starts, then "<source>: <reason>" (the spawner finds the mount it names).
REFUSED = "deployer mount guard refused"
#: What Docker allows as a volume's name (the guard's own are `<deployment>-...` and a digest).
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Refused(Exception):
    """A mount the guard does not make: the message says which path and why (shown to the user)."""


def volume_name(deployment: str, source: str) -> str:
    """The volume of ``source`` for ``deployment``: one name per source, so a name cannot be re-pointed."""
    return f"{deployment}-mnt-{hashlib.sha256(source.encode()).hexdigest()[:32]}"


def driver_name(deployment: str) -> str:
    """The volume driver (plugin) of a deployment: each deployment's guard has its own policy."""
    return f"{deployment}-mounts"


def is_clean_absolute(path: object) -> bool:
    return (isinstance(path, str) and path.startswith("/") and not path.startswith("//") and "\0" not in path
            and posixpath.normpath(path) == path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Rule:
    """One kind of mount the configuration gives notebooks (a ``volume_mounts`` entry, a profile's, the
    project mounts, the token directory): ``source`` and ``target`` are regular expressions matching every
    rendering of its host and container path (:func:`deployer_hub.mounts.pattern`); ``anchor`` is the
    directory below which nothing is trusted (the share, or the site directory the operator named), so no
    link is followed below it; ``read_only``: mounted read-only."""

    source: str
    target: str
    anchor: str
    read_only: bool = False

    def matches_source(self, path: str) -> bool:
        return re.fullmatch(self.source, path) is not None

    def matches_target(self, path: str) -> bool:
        return re.fullmatch(self.target, path) is not None

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "anchor": self.anchor, "read_only": self.read_only}

    @classmethod
    def from_dict(cls, entry: object) -> Rule:
        if not isinstance(entry, dict) or set(entry) - {"source", "target", "anchor", "read_only"}:
            raise ValueError(f"mount rule {entry!r} must be an object with source, target, anchor and read_only")
        rule = cls(entry.get("source"), entry.get("target", "/.*"), entry.get("anchor"), entry.get("read_only", False))  # type: ignore[arg-type]
        for key in ("source", "target"):
            try:
                re.compile(getattr(rule, key))
            except (re.error, TypeError):
                raise ValueError(f"mount rule {entry!r}: {key} must be a regular expression") from None
        if not is_clean_absolute(rule.anchor) or rule.anchor == "/" or not isinstance(rule.read_only, bool):
            raise ValueError(f"mount rule {entry!r}: anchor must be a clean absolute path other than /, read_only true or false")
        return rule


def placement(rules: tuple[Rule, ...], source: object) -> tuple[str, bool]:
    """(the anchor to open ``source`` from, whether it must be mounted read-only), or raise Refused.

    Read-only wins: a source any read-only rule matches is mounted read-only, even when a writable one
    matches too (a user named like the shared directory gets no write access to it)."""
    if not is_clean_absolute(source):
        raise Refused(f"{source!r} is not a clean absolute path")
    matching = [r for r in rules if r.matches_source(source) and _under(source, r.anchor)]  # type: ignore[arg-type]
    if not matching:
        raise Refused(f"{source} is not a directory this deployment mounts")
    return min((r.anchor for r in matching), key=len), any(r.read_only for r in matching)


@dataclass(frozen=True)
class Policy:
    deployment: str
    rules: tuple[Rule, ...] = ()
    staging: str = ""  # root-only directory of the staging mounts; default /run/deployer/<deployment>/mounts
    state: str = ""  # the volumes' sources, kept across restarts; default /var/lib/deployer/<deployment>/mountguard.json

    def __post_init__(self) -> None:
        if not self.staging:
            object.__setattr__(self, "staging", f"/run/deployer/{self.deployment}/mounts")
        if not self.state:
            object.__setattr__(self, "state", f"/var/lib/deployer/{self.deployment}/mountguard.json")

    @property
    def driver(self) -> str:
        return driver_name(self.deployment)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("deployment"), str) or not data["deployment"]:
            raise ValueError("the policy must be an object with a deployment")
        unknown = set(data) - {"deployment", "rules", "staging", "state"}
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        policy = cls(data["deployment"], tuple(Rule.from_dict(r) for r in data.get("rules", [])), data.get("staging", ""), data.get("state", ""))
        for path in (policy.staging, policy.state):
            if not is_clean_absolute(path):
                raise ValueError(f"policy path {path!r} must be a clean absolute path")
        return policy

    def to_json(self) -> str:
        return json.dumps({"deployment": self.deployment, "staging": self.staging, "state": self.state,
                           "rules": [r.to_dict() for r in self.rules]}, sort_keys=True, separators=(",", ":"))

    def placement(self, source: object) -> tuple[str, bool]:
        return placement(self.rules, source)


# --- opening without following links ------------------------------------------------------------

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def open_beneath(anchor: str, source: str) -> int:
    """An ``O_PATH`` descriptor of ``source``, reached from ``anchor`` one component at a time, none of
    them a symbolic link. The anchor itself is opened as written (the operator's path). Raises Refused."""
    if not _under(source, anchor):
        raise Refused(f"{source} is not below {anchor}")
    try:
        fd = os.open(anchor, _DIR)
    except OSError as exc:
        raise Refused(f"{anchor} cannot be opened on this host: {exc.strerror}") from None
    here = anchor
    try:
        for part in [p for p in source[len(anchor):].split("/") if p]:
            try:
                child = _open_component(fd, part)
            except FileNotFoundError:
                raise Refused(f"{posixpath.join(here, part)} does not exist on this host") from None
            except OSError as exc:
                raise Refused(f"{posixpath.join(here, part)} cannot be opened on this host: {exc.strerror}") from None
            os.close(fd)
            fd = child
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise Refused(f"{posixpath.join(here, part)} is a symbolic link (storage is never mounted through a link)")
            here = posixpath.join(here, part)
            if here != source and not stat.S_ISDIR(mode):
                raise Refused(f"{here} is not a directory")
        if not (stat.S_ISDIR(os.fstat(fd).st_mode) or stat.S_ISREG(os.fstat(fd).st_mode)):
            raise Refused(f"{source} is neither a directory nor a file")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_component(dir_fd: int, part: str) -> int:
    """``part`` in the directory ``dir_fd``, itself, never a link's target. Over NFS with root squashed, root is
    nobody to the server and may not pass through a user's 0750 directory (the engine could not either): then
    the lookup is made again as the directory's owner (setfsuid, this thread only), who may."""
    try:
        return os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except PermissionError:
        owner = os.fstat(dir_fd)
        if os.geteuid() != 0 or owner.st_uid == 0:
            raise
        with _acting_as(owner.st_uid, owner.st_gid):
            return os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


@contextlib.contextmanager
def _acting_as(uid: int, gid: int):
    """File system accesses of this thread as uid:gid (setfsuid/setfsgid: per thread, nothing else changes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    old_gid = libc.setfsgid(gid)
    old_uid = libc.setfsuid(uid)
    try:
        if libc.setfsuid(uid) != uid:  # (setfsuid answers the previous value: asked again, it is the current one)
            raise PermissionError(errno.EPERM, "cannot act as the directory's owner (the guard needs CAP_SETUID and CAP_SETGID)")
        yield
    finally:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)


def make_dirs_beneath(anchor: str, source: str, mode: int, uid: int, gid: int) -> list[str]:
    """Create the missing directories of ``source`` below ``anchor`` (the hub's per-user directories),
    never through a symbolic link; each new one is owned by uid:gid. Returns the directories made."""
    made = []
    fd = os.open(anchor, _DIR)
    here = anchor
    try:
        for part in [p for p in source[len(anchor):].split("/") if p]:
            path = posixpath.join(here, part)
            try:
                os.mkdir(part, mode, dir_fd=fd)
            except FileExistsError:
                pass
            else:
                made.append(path)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                kind = "a symbolic link" if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path) else exc.strerror
                raise Refused(f"{path} is {kind}" if kind == "a symbolic link" else f"{path}: {kind}") from None
            os.close(fd)
            fd = child
            if path in made:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            here = path
        return made
    finally:
        os.close(fd)


# --- the agent: mounting (Linux only) --------------------------------------------------------------

MS_BIND, MS_REC, MS_REMOUNT, MS_RDONLY, MS_PRIVATE = 0x1000, 0x4000, 0x20, 0x1, 1 << 18
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000


class Kernel:
    """mount(2), umount2(2) and setns(2), which Python's os module does not offer."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")

    def bind(self, fd: int, target: str, read_only: bool) -> None:
        # The descriptor's magic link is the object opened, not a path to look up again.
        self._check(self.libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {target}")
        self._check(self.libc.mount(None, target.encode(), None, MS_PRIVATE | MS_REC, None), f"make {target} private")
        if read_only:
            self._check(self.libc.mount(None, target.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None), f"make {target} read-only")

    def unmount(self, target: str) -> None:
        self._check(self.libc.umount2(target.encode(), MNT_DETACH), f"unmount {target}")

    def enter_mount_namespace(self, pid: int) -> None:
        """Join the mount namespace of ``pid`` (with --pid host): call before any thread starts."""
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._check(self.libc.setns(fd, CLONE_NEWNS), "setns")
        finally:
            os.close(fd)


def engine_pid(docker_socket: str = "/var/run/docker.sock", name: str = "dockerd") -> int:
    """The pid of the engine whose socket this container was given (seen with --pid host): the process at the
    other end of a connection to it (SO_PEERCRED: the one that listens there). Its mount namespace is where the
    engine binds a volume's mountpoint. Not found by name and path: a host may run other engines (Docker in
    Docker, CI runners), and /proc/PID/root/var/run/... leaves that root at an absolute link (/var/run -> /run),
    so every engine's socket would look like ours. A socket-activated engine's socket belongs to the service
    manager: then the one engine in the manager's pid namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(docker_socket)
        peer = struct.unpack("3i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
    if peer <= 0:
        raise OSError(f"the process serving {docker_socket} is not visible here (run the guard with --pid host)")
    if _comm(peer) == name:
        return peer
    namespace = os.readlink(f"/proc/{peer}/ns/pid")
    engines = [int(e) for e in os.listdir("/proc") if e.isdigit() and _comm(int(e)) == name and _pid_namespace(int(e)) == namespace]
    if len(engines) != 1:
        raise OSError(f"{docker_socket} is served by pid {peer} ({_comm(peer) or '?'}), and {len(engines)} {name} processes share its "
                      "pid namespace: cannot tell which engine mounts the volumes")
    return engines[0]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def staged_mounts(staging: str) -> list[str]:
    """Mount points at or below ``staging``, deepest first (from /proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            point = line.split()[4].encode("latin-1", "surrogateescape").decode("unicode_escape")
            if _under(point, staging):
                found.append(point)
    return sorted(found, key=len, reverse=True)


class Guard:
    """The volume driver: its volumes (name -> source) and the staging mounts of the running containers."""

    def __init__(self, policy: Policy, kernel: Kernel | None = None) -> None:
        self.policy = policy
        self.kernel = kernel or Kernel()
        self.lock = threading.Lock()
        self.volumes: dict[str, str] = self._load()
        self.mounted: dict[str, dict[str, str]] = {}  # volume name -> container ID -> staging path

    def _load(self) -> dict[str, str]:
        try:
            with open(self.policy.state, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log(f"cannot read {self.policy.state} ({exc}); starting with no volumes")
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.policy.state), mode=0o700, exist_ok=True)
        tmp = f"{self.policy.state}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.volumes, f, sort_keys=True)
        os.replace(tmp, self.policy.state)

    def clean(self) -> None:
        """Let go of staging mounts a previous run left (running containers keep their own copies)."""
        os.makedirs(self.policy.staging, mode=0o700, exist_ok=True)
        os.chmod(self.policy.staging, 0o700)
        for point in staged_mounts(self.policy.staging):
            if point != self.policy.staging:
                try:
                    self.kernel.unmount(point)
                except OSError as exc:
                    log(f"cannot unmount {point}: {exc}")
        for entry in sorted(os.listdir(self.policy.staging)):
            _remove_tree(os.path.join(self.policy.staging, entry))

    # The VolumeDriver protocol: each returns the answer's JSON object.

    def create(self, name: str, opts: dict | None) -> dict:
        opts = opts or {}
        source = opts.get(SOURCE_OPTION)
        if set(opts) != {SOURCE_OPTION} or not isinstance(source, str):
            raise Refused(f"a volume takes one option, {SOURCE_OPTION}")
        self.policy.placement(source)
        if name != volume_name(self.policy.deployment, source):
            raise Refused(f"volume {name} is not the volume of {source}")
        with self.lock:
            if self.volumes.get(name) != source:
                self.volumes[name] = source
                self._save()
        return {}

    def remove(self, name: str) -> dict:
        with self.lock:
            if self.mounted.get(name):
                raise Refused(f"volume {name} is in use")
            if self.volumes.pop(name, None) is not None:
                self._save()
        return {}

    def get(self, name: str) -> dict:
        if name not in self.volumes:
            raise Refused(f"no volume {name}")
        return {"Volume": {"Name": name, "Mountpoint": self._latest(name), "Status": {"source": self.volumes[name]}}}

    def list(self) -> dict:
        return {"Volumes": [{"Name": n, "Mountpoint": self._latest(n)} for n in sorted(self.volumes)]}

    def path(self, name: str) -> dict:
        return {"Mountpoint": self._latest(name)}

    def _latest(self, name: str) -> str:
        held = self.mounted.get(name) or {}
        return next(reversed(held.values()), "")

    def mount(self, name: str, container: str) -> dict:
        source = self.volumes.get(name)
        if source is None:
            raise Refused(f"no volume {name}")
        if not container or not all(c in "0123456789abcdef" for c in container):
            raise Refused("the engine named no container")
        anchor, read_only = self.policy.placement(source)
        fd = open_beneath(anchor, source)
        try:
            target = os.path.join(self.policy.staging, name, container[:64])
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.makedirs(target, mode=0o700, exist_ok=True)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            self.kernel.bind(fd, target, read_only)
        except OSError as exc:
            raise Refused(f"{source} cannot be mounted: {exc}") from None
        finally:
            os.close(fd)
        with self.lock:
            self.mounted.setdefault(name, {})[container] = target
        log(f"mounted {source} for container {container[:12]}{' read-only' if read_only else ''}")
        return {"Mountpoint": target}

    def unmount(self, name: str, container: str) -> dict:
        with self.lock:
            target = (self.mounted.get(name) or {}).pop(container, None)
            if not self.mounted.get(name):
                self.mounted.pop(name, None)
        if target:
            try:
                self.kernel.unmount(target)
            except OSError as exc:
                log(f"cannot unmount {target}: {exc}")
            _remove_tree(target)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(target))
        return {}


def _remove_tree(path: str) -> None:
    """Remove the empty directories (and plain files) of a staging path; never descends into a mount."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            if os.path.ismount(path):
                return
            for entry in os.listdir(path):
                _remove_tree(os.path.join(path, entry))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


# --- the plugin's HTTP API ----------------------------------------------------------------------

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


def dispatch(guard: Guard, path: str, body: dict) -> dict:
    """One VolumeDriver call: the answer, with ``Err`` set on a refusal."""
    name = body.get("Name", "")
    calls = {
        "/Plugin.Activate": lambda: {"Implements": ["VolumeDriver"]},
        "/VolumeDriver.Capabilities": lambda: {"Capabilities": {"Scope": "local"}},
        "/VolumeDriver.Create": lambda: guard.create(name, body.get("Opts")),
        "/VolumeDriver.Remove": lambda: guard.remove(name),
        "/VolumeDriver.Get": lambda: guard.get(name),
        "/VolumeDriver.List": guard.list,
        "/VolumeDriver.Path": lambda: guard.path(name),
        "/VolumeDriver.Mount": lambda: guard.mount(name, body.get("ID", "")),
        "/VolumeDriver.Unmount": lambda: guard.unmount(name, body.get("ID", "")),
    }
    if path not in calls:
        return {"Err": f"deployer mount guard: {path} is not supported"}
    if not isinstance(name, str):
        return {"Err": "deployer mount guard: Name must be a string"}
    try:
        answer = calls[path]()
    except Refused as exc:
        source = guard.volumes.get(name) or (body.get("Opts") or {}).get(SOURCE_OPTION) or name
        if path in ("/VolumeDriver.Create", "/VolumeDriver.Mount"):  # (the engine asks every driver for any name it inspects)
            log(f"refused to {path.rsplit('.', 1)[-1].lower()} {source}: {exc}")
        return {"Err": f"{REFUSED} {source}: {exc}"}
    return {"Err": "", **answer} if path.startswith("/VolumeDriver.") else answer


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = self.headers.get("Content-Length", "0")
        try:
            raw = self.rfile.read(int(length)) if length.isdigit() and int(length) <= 65536 else b""
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        answer = dispatch(self.server.guard, self.path, body) if isinstance(body, dict) else {"Err": "deployer mount guard: not a JSON object"}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        pass  # each mount is logged by the guard; requests are not


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, guard: Guard) -> None:
        self.guard = guard
        super().__init__(path, Handler)

    def get_request(self):  # http.server wants an address pair
        request, _ = super().get_request()
        return request, ("docker", 0)


def log(text: str) -> None:
    print(f"mountguard: {text}", file=sys.stderr, flush=True)


def announce(docker_socket: str = "/var/run/docker.sock", tries: int = 30) -> None:
    """Ask the engine to list volumes: it then finds this plugin's socket and tells the swarm the node has the
    driver (the scheduler places a task that needs it only on such nodes)."""
    for _ in range(tries):
        try:
            connection = http.client.HTTPConnection("docker", timeout=30)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(docker_socket)
            connection.sock = sock
            connection.request("GET", "/volumes")
            if connection.getresponse().status == 200:
                return
        except OSError as exc:
            log(f"the engine is not answering yet ({exc})")
        time.sleep(1)
    log("the engine never listed its volumes: notebooks may not be placed on this host until it does")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = os.environ.get(POLICY_ENV, "")
    if argv[:1] == ["--policy"] and len(argv) > 1:
        with open(argv[1], encoding="utf-8") as f:
            text = f.read()
    try:
        policy = Policy.from_json(text)
    except (ValueError, TypeError) as exc:
        log(f"the policy is not valid: {exc}")
        return 2
    kernel = Kernel()
    if os.environ.get("DEPLOYER_MOUNTGUARD_NAMESPACE", "engine") == "engine":
        try:  # before any thread: a threaded process cannot change its mount namespace
            kernel.enter_mount_namespace(engine_pid())
        except OSError as exc:
            log(f"cannot enter the engine's mount namespace: {exc}")
            return 1
    guard = Guard(policy, kernel)
    if argv[:1] == ["--volumes"]:  # `docker exec`ed by deploy's removal of the guard: its volumes' names, one a line
        print("\n".join(sorted(n for n in guard.volumes if VOLUME_NAME.fullmatch(n))))
        return 0
    guard.clean()
    os.makedirs(PLUGIN_DIR, mode=0o700, exist_ok=True)
    listen = os.path.join(PLUGIN_DIR, f"{policy.driver}.sock")
    if os.path.lexists(listen):
        os.unlink(listen)
    old = os.umask(0o177)
    try:
        server = Server(listen, guard)
    finally:
        os.umask(old)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=announce, daemon=True, name="announce").start()
    log(f"serving the volume driver {policy.driver} for {policy.deployment}: "
        + f"{len(policy.rules)} kinds of mounts below " + ", ".join(sorted({r.anchor for r in policy.rules})))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(listen)
        guard.clean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
