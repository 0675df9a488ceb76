"""The lab: several real "hosts" on this machine, each a Docker-in-Docker container with its own
Docker engine, sshd (root by key only) and the NFS tools, on a private bridge network with fixed
addresses. Deployer reaches them over real SSH, exactly as it reaches real machines.

    with Lab() as lab:
        lab.ssh("hub", "docker info")
        lab.load_image("worker1", "deployer/jupyteruser:0.2.0")

The flags come from /work/shared/reference/lab.md (``--privileged`` is refused on these machines;
each inner engine needs its own ``--cgroup-parent`` and a volume for /var/lib/docker). Every
container, volume and network the lab makes carries the label ``org.deployer.lab=<prefix>`` and
is removed again by :meth:`Lab.stop`, and by the next :meth:`Lab.start` after a killed run.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = ROOT / "images" / "lab"
IMAGE = "deployer/lab-host:latest"
BASE = os.environ.get("DEPLOYER_LAB_BASE", "deployer/base:bookworm")
HASH_LABEL = "org.deployer.content-hash"
LAB_LABEL = "org.deployer.lab"
#: Bumped when the way the image is built changes without its files changing.
RECIPE_VERSION = "1"


class LabError(RuntimeError):
    """The lab could not be built, started or reached."""


def _docker(*args: str, check: bool = True, timeout: float = 300, input: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, timeout=timeout, input=input, check=False)
    if check and result.returncode != 0:
        raise LabError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr.decode(errors='replace')[-3000:]}")
    return result


def _out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode(errors="replace").strip()


class Lab:
    """A set of lab hosts; see the module docstring."""

    def __init__(self, hosts=("hub", "worker1", "worker2"), subnet="10.99.0.0/24", prefix="deployer-lab", shared=()):
        self.prefix = prefix
        #: Paths that are one directory seen by every host (a volume mounted into all of them):
        #: what a shared file system, or an NFS mount, gives real machines. The kernel here cannot
        #: mount NFS, so a lab deployment's share is one of these.
        self.shared = tuple(shared)
        self.network = f"{prefix}-net"
        self.subnet = ipaddress.ip_network(subnet)
        first = 11
        if self.subnet.num_addresses < first + len(hosts) + 1:
            raise LabError(f"subnet {subnet} is too small for {len(hosts)} hosts from .{first}")
        #: host name -> its IP address on the lab network (.11, .12, .13, ...)
        self.hosts: dict[str, str] = {h: str(self.subnet.network_address + first + i) for i, h in enumerate(hosts)}
        self._tmp: Path | None = None
        self.key_path: Path | None = None
        self.known_hosts: Path | None = None

    # --- names -------------------------------------------------------------------------------

    def container(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def volumes(self, host: str) -> dict[str, str]:
        """Volume name -> mount point: the inner engine's storage, and /srv (a real filesystem
        for data the host serves, e.g. an NFS export; the container's overlay root cannot be)."""
        volumes = {f"{self.prefix}-{host}-docker": "/var/lib/docker", f"{self.prefix}-{host}-srv": "/srv"}
        for path in self.shared:
            volumes[f"{self.prefix}-shared-{hashlib.sha256(path.encode()).hexdigest()[:8]}"] = path
        return volumes

    # --- the image ---------------------------------------------------------------------------

    @staticmethod
    def content_hash() -> str:
        """Everything that decides the image: the build context's files, the base image's id."""
        digest = hashlib.sha256()
        digest.update(f"recipe {RECIPE_VERSION}\n".encode())
        base_id = _out(_docker("image", "inspect", "--format", "{{.Id}}", BASE))
        digest.update(f"base {BASE} {base_id}\n".encode())
        for path in sorted(p for p in CONTEXT.rglob("*") if p.is_file()):
            digest.update(f"file {path.relative_to(CONTEXT)} {oct(path.stat().st_mode & 0o777)}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
        return digest.hexdigest()[:16]

    @classmethod
    def ensure_image(cls) -> bool:
        """Builds the lab image unless one with the same content hash exists. True if it built."""
        wanted = cls.content_hash()
        have = _docker("image", "inspect", "--format", f'{{{{ index .Config.Labels "{HASH_LABEL}" }}}}', IMAGE, check=False)
        if have.returncode == 0 and _out(have) == wanted:
            return False
        env = dict(os.environ, DOCKER_BUILDKIT="0")  # Debian's docker.io: the classic builder only
        result = subprocess.run(
            ["docker", "build", "--force-rm", "--build-arg", f"BASE={BASE}", "--label", f"{HASH_LABEL}={wanted}", "-t", IMAGE, str(CONTEXT)],
            capture_output=True, timeout=1800, env=env, check=False,
        )
        if result.returncode != 0:
            raise LabError(f"building {IMAGE} failed:\n{result.stdout.decode(errors='replace')[-3000:]}\n{result.stderr.decode(errors='replace')[-3000:]}")
        return True

    # --- life cycle --------------------------------------------------------------------------

    def remove_leftovers(self) -> None:
        """Removes this lab's containers, volumes and network, whatever state they are in."""
        names = set(_out(_docker("ps", "-aq", "--filter", f"label={LAB_LABEL}={self.prefix}", check=False)).split())
        for host in self.hosts:
            if _docker("container", "inspect", self.container(host), check=False).returncode == 0:
                names.add(self.container(host))
        if names:
            _docker("rm", "-f", "-v", *sorted(names), check=False, timeout=180)
        # Only the local driver's volumes: a listing of every driver (or an inspect of a missing volume, which asks them all)
        # waits 15 s for each gone volume plugin the engine keeps (a destroyed deployment's mount guard, in the swarm tier).
        local = set(_out(_docker("volume", "ls", "-q", "--filter", "driver=local", check=False)).split())
        labelled = _docker("volume", "ls", "-q", "--filter", "driver=local", "--filter", f"label={LAB_LABEL}={self.prefix}", check=False)
        volumes = set(_out(labelled).split())
        for host in self.hosts:
            volumes.update(v for v in self.volumes(host) if v in local)
        if volumes:
            _docker("volume", "rm", "-f", *sorted(volumes), check=False)
        if _docker("network", "inspect", self.network, check=False).returncode == 0:
            _docker("network", "rm", self.network, check=False)
        # Key directories of labs that were kept (DEPLOYER_KEEP_LAB=1) or killed: their hosts are gone.
        for directory in Path(tempfile.gettempdir()).glob(f"{self.prefix}-*"):
            if directory != self._tmp and directory.is_dir() and (directory / "id_ed25519").exists():
                shutil.rmtree(directory, ignore_errors=True)

    def start(self, timeout: float = 180) -> Lab:
        self.ensure_image()
        self.remove_leftovers()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))  # 0700
        self.key_path = self._tmp / "id_ed25519"
        self.known_hosts = self._tmp / "known_hosts"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.prefix}@deployer-tests", "-f", str(self.key_path)],
                       check=True, capture_output=True, timeout=30)
        os.chmod(self.key_path, 0o600)
        public_key = self.key_path.with_suffix(".pub").read_text().strip()
        try:
            _docker("network", "create", "--driver", "bridge", "--subnet", str(self.subnet), "--label", f"{LAB_LABEL}={self.prefix}", self.network)
            made = set(_out(_docker("volume", "ls", "-q", "--filter", "driver=local", check=False)).split())  # (see remove_leftovers)
            for host, ip in self.hosts.items():
                mounts = []
                for volume, target in self.volumes(host).items():
                    if volume not in made:  # shared ones exist already
                        _docker("volume", "create", "--label", f"{LAB_LABEL}={self.prefix}", volume)
                        made.add(volume)
                    mounts += ["-v", f"{volume}:{target}"]
                _docker(
                    "run", "-d", "--name", self.container(host), "--hostname", host,
                    "--label", f"{LAB_LABEL}={self.prefix}",
                    "--network", self.network, "--ip", ip,
                    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                    "--security-opt", "systempaths=unconfined",
                    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run",
                    *mounts,
                    "-e", f"LAB_AUTHORIZED_KEY={public_key}",
                    "-e", f"LAB_CGROUP_PARENT=/dind-{self.prefix}-{host}",
                    IMAGE, "--log-level=warn",
                )
            self._wait(timeout)
        except BaseException:
            if os.environ.get("DEPLOYER_KEEP_LAB") != "1":
                self.stop()
            raise
        return self

    def _wait(self, timeout: float) -> None:
        """Until every host answers ``docker info`` over SSH; a clear error with logs if not."""
        deadline = time.monotonic() + timeout
        pending = dict(self.hosts)
        last: dict[str, str] = {}
        while pending:
            for host in list(pending):
                state = _out(_docker("inspect", "--format", "{{.State.Status}}", self.container(host), check=False))
                if state != "running":
                    raise LabError(f"lab host {host} is {state or 'gone'}:\n{self.logs(host)}")
                try:
                    result = self.ssh(host, "docker info --format '{{.ServerVersion}}'", check=False, timeout=20, connect_timeout=5)
                except subprocess.TimeoutExpired:
                    last[host] = "ssh timed out"
                    continue
                if result.returncode == 0:
                    del pending[host]
                else:
                    last[host] = (result.stdout + result.stderr).decode(errors="replace").strip()[-500:]
            if not pending:
                break
            if time.monotonic() > deadline:
                details = "\n\n".join(f"--- {h} ({self.hosts[h]}): last answer: {last.get(h, '')}\n{self.logs(h)}" for h in pending)
                raise LabError(f"lab hosts did not answer `ssh root@IP docker info` within {timeout:.0f}s: {', '.join(pending)}\n{details}")
            time.sleep(1)

    def logs(self, host: str, tail: int = 40) -> str:
        """The last lines the host's entrypoint, sshd and dockerd wrote."""
        result = _docker("logs", "--tail", str(tail), self.container(host), check=False)
        return (result.stdout + result.stderr).decode(errors="replace")

    def stop(self) -> None:
        self.remove_leftovers()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- using the hosts ---------------------------------------------------------------------

    def ssh_command(self, host: str, *, connect_timeout: int = 10) -> list[str]:
        """The ssh command line (without the remote command) that reaches ``host`` as root."""
        if self.key_path is None:
            raise LabError("the lab is not started")
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.key_path),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
            f"root@{self.hosts[host]}",
        ]

    def ssh(self, host: str, command: str, *, input: bytes | None = None, check: bool = True, timeout: float = 300,
            connect_timeout: int = 10) -> subprocess.CompletedProcess:
        """Runs ``command`` on ``host`` over real SSH; output as bytes."""
        result = subprocess.run([*self.ssh_command(host, connect_timeout=connect_timeout), command],
                                input=input if input is not None else b"", capture_output=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise LabError(f"ssh {host} {command!r} failed ({result.returncode}):\n"
                           f"{result.stdout.decode(errors='replace')[-2000:]}\n{result.stderr.decode(errors='replace')[-2000:]}")
        return result

    def write_servers(self, directory: Path, scope: str) -> None:
        """The servers file an operator writes for these hosts (``site.hosts``, the first host the
        hub, the others workers) and the lab's key beside it as ``deploy_key`` (0600)."""
        key = directory / "deploy_key"
        key.write_bytes(self.key_path.read_bytes())
        os.chmod(key, 0o600)
        hosts = [{"host_id": name, "ssh_host": ip, "private_ip": ip, "roles": ["hub"] if i == 0 else ["worker"]}
                 for i, (name, ip) in enumerate(self.hosts.items())]
        servers = {"ssh_user": "root", "ssh_key": "deploy_key", "ssh_known_hosts": "known_hosts", scope: {"hosts": hosts}}
        (directory / "site.hosts").write_text(yaml.safe_dump(servers))

    def load_image(self, host: str, image: str, timeout: float = 900) -> None:
        """``docker save IMAGE | ssh HOST docker load``."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(save.stderr.read()), daemon=True)
        reader.start()
        try:
            load = subprocess.run([*self.ssh_command(host), "docker load"], stdin=save.stdout, capture_output=True, timeout=timeout, check=False)
        finally:
            save.stdout.close()
            try:
                save.wait(timeout=60)
            except subprocess.TimeoutExpired:
                save.kill()
                save.wait()
            reader.join(timeout=10)
        if save.returncode != 0:
            raise LabError(f"docker save {image} failed ({save.returncode}): {b''.join(errors).decode(errors='replace')[-2000:]}")
        if load.returncode != 0:
            raise LabError(f"docker load of {image} on {host} failed ({load.returncode}):\n{load.stderr.decode(errors='replace')[-2000:]}")
