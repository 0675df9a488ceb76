"""``deployer backup`` and ``restore``: what a hub cannot be rebuilt from the deployment files.

The archive holds the hub's databases (JupyterHub's users, servers and tokens; the identities of
tenant accounts), its kept state (cookie secret, auth-state key, secret-naming key, self-signed
certificate: without them every user is logged out and loses their stored tokens) and the
deployment's secrets from the passwords file. It is a tar file written 0600, optionally encrypted
with a passphrase (scrypt, then Fernet: AES-128-CBC with HMAC-SHA256). The databases are copied
online through the running hub container (SQLite's backup API), so a backup is consistent while
users work.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, replace

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from deployer import __version__
from deployer.config.hubsettings import DATABASES, HUB_ROOT, Layout
from deployer.config.loader import Deployment
from deployer.errors import DeployerError
from deployer.hosts.commands import Command, sh
from deployer.phases.facts import STATE_FILES, read_state, state_dir
from deployer.phases.hub import remove_and_wait

MAGIC = b"DEPLOYER-BACKUP-ENCRYPTED-1\n"
SALT_BYTES = 16

# Each database as "name base64" on one line: an online copy through the hub container when it runs
# (SQLite's backup API sees a consistent database), else the file itself (no writer).
_COPY_DB = """import os, sqlite3, sys, tempfile
src = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
fd, tmp = tempfile.mkstemp()
os.close(fd)
dst = sqlite3.connect(tmp)
src.backup(dst)
dst.close()
sys.stdout.buffer.write(open(tmp, "rb").read())
os.unlink(tmp)
"""
READ_DATABASES = ('c=$(docker ps -q --filter "label=com.docker.swarm.service.name=$1" 2>/dev/null | head -n 1); shift; dir=$1; inside=$2; copy=$3; shift 3\n'
                  'for db; do [ -s "$dir/$db" ] || continue; printf "%s " "$db"\n'
                  '  if [ -n "$c" ]; then docker exec "$c" python3 -c "$copy" "$inside/$db" | base64 -w0; else base64 -w0 "$dir/$db"; fi; echo; done')


class BackupError(DeployerError):
    """A backup cannot be made, read or restored; says which and what to do."""


@dataclass
class Backup:
    deployment: str
    files: dict[str, bytes]  # "state/<name>" and "data/<database>"
    secrets: dict[str, str]  # the passwords file's values of this deployment
    made: str = ""
    version: str = __version__


def collect(ex, deployment: Deployment, layout: Layout) -> Backup:
    files = {f"state/{name}": value.encode() for name, value in read_state(ex, layout).items() if value is not None}
    out = ex.run(sh(READ_DATABASES, layout.hub_service, layout.data_dir, f"{HUB_ROOT}/data", _COPY_DB, *DATABASES), timeout=600).stdout
    for line in out.splitlines():
        name, _, data = line.partition(" ")
        if name in DATABASES and data:
            files[f"data/{name}"] = base64.b64decode(data)
    if "data/jupyterhub.sqlite" not in files:
        raise BackupError(f"{ex.host}: no hub database in {layout.data_dir}: nothing to back up (has {deployment.target} been deployed?)")
    config = deployment.config
    secrets = {key: value.get_secret_value() for key in ("jupyterhub_oauth_client_secret", "tas_role_pass", "jupyterhub_key", "local_dev_password")
               if (value := getattr(config, key, None)) is not None}
    return Backup(str(deployment.target), files, secrets, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def pack(backup: Backup, passphrase: str | None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        manifest = {"deployment": backup.deployment, "made": backup.made, "deployer": backup.version, "files": sorted(backup.files)}
        members = {"manifest.json": json.dumps(manifest, indent=2).encode(), "secrets.json": json.dumps(backup.secrets).encode(), **backup.files}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if passphrase is None:
        return data
    salt = os.urandom(SALT_BYTES)
    return MAGIC + salt + Fernet(_key(passphrase, salt)).encrypt(data)


def unpack(data: bytes, passphrase: str | None, source: str) -> Backup:
    if data.startswith(MAGIC):
        if not passphrase:
            raise BackupError(f"{source} is encrypted: give its passphrase (DEPLOYER_BACKUP_PASSPHRASE, or answer the prompt)")
        salt, token = data[len(MAGIC):len(MAGIC) + SALT_BYTES], data[len(MAGIC) + SALT_BYTES:]
        try:
            data = Fernet(_key(passphrase, salt)).decrypt(token)
        except InvalidToken:
            raise BackupError(f"{source}: wrong passphrase, or the file is damaged") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
        manifest = json.loads(members.pop("manifest.json"))
        secrets = json.loads(members.pop("secrets.json"))
    except (tarfile.TarError, KeyError, ValueError, OSError, EOFError):
        raise BackupError(f"{source} is not a Deployer backup (or is damaged)") from None
    allowed = {f"state/{n}" for n in STATE_FILES} | {f"data/{n}" for n in DATABASES}
    unknown = sorted(set(members) - allowed)
    if unknown:  # only the files restore writes, under names it chooses: nothing else from an archive
        raise BackupError(f"{source} holds files a Deployer backup does not: {', '.join(unknown[:5])}")
    return Backup(manifest["deployment"], members, secrets, manifest.get("made", ""), manifest.get("deployer", ""))


def _key(passphrase: str, salt: bytes) -> bytes:
    return base64.urlsafe_b64encode(Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode()))


def write_private(path: str, data: bytes, force: bool = False) -> None:
    """The archive, 0600 from its first byte (never world-readable, not even for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} exists: choose another file (-o), or pass --force to replace it") from None
    except OSError as error:
        raise BackupError(f"cannot write {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def restore_commands(backup: Backup, layout: Layout) -> list[Command]:
    """Put the backup's files in place on the hub (before the hub starts): the state 0600 in its 0700
    directory, the databases in the hub's data directory."""
    commands = [replace(remove_and_wait(layout), why="stop the hub (its database is replaced)")]
    for name, data in sorted(backup.files.items()):
        kind, _, file = name.partition("/")
        directory = state_dir(layout) if kind == "state" else layout.data_dir
        # A database's old write-ahead log must not be replayed onto the restored file.
        commands.append(sh('set -e; umask 077; mkdir -p "$(dirname "$1/$2")"; chmod 0700 "$1"; cat >"$1/$2.restore"; '
                           'rm -f "$1/$2-wal" "$1/$2-shm" "$1/$2-journal"; mv "$1/$2.restore" "$1/$2"',
                           directory, file, input=data, why=f"restore {name}"))
    return commands
