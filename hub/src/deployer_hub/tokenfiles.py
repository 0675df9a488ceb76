"""The user's tokens as files their notebook's libraries read, so they work without a second login.

Per user, in ``{token_root}/{tenant_id}/{username}/`` on the shared store (the NFS
management cluster carries it from the hub to the workers), the spawner mounts
this directory into the container. Files are written atomically (a temporary
file in the same directory, fsync, rename), mode 0600, owned by the notebook's
uid/gid, so a reader never sees half a file and no other user can read them.

Agave v2: ``current`` and ``.agpy``, the two files agavepy's ``Agave.restore()`` reads
(``$AGAVE_CACHE_DIR/current`` or ``~/.agave/current`` first, then ``~/.agpy``); the
directory is mounted at ``~/.agave``. Both stay writable by the user because agavepy
rewrites ``current`` after refreshing a token itself.
Tapis v3: tapipy has no file loader of its own, so ``tapis.json`` holds exactly the
arguments of ``tapipy.tapis.Tapis(...)`` (``tenant_id`` included: without it tapipy
asks the network for the tenant at construction); ``tapis_token`` holds the bare
access token for shell tools.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from typing import Any

from . import paths
from .tenants import Flavour

#: Where the user's token directory appears in a notebook: agavepy's default cache directory (``~/.agave``).
MOUNT_PATH = "/home/jupyter/.agave"
FILE_MODE = 0o600
DIR_MODE = 0o700
TENANT_DIR_MODE = 0o711  # users may pass through to their own directory, not list the others


def user_dir(token_root: str, tenant_id: str, username: str) -> str:
    return paths.join_under(token_root, paths.safe_component(tenant_id, "tenant id"), paths.safe_component(username))


def render(flavour: Flavour, tenant_id: str, base_url: str, username: str, auth_state: dict[str, Any],
           client: tuple[str, str] | None = None, *, verify: bool | str = True) -> dict[str, bytes]:
    """File name -> content for one user's tokens. ``client`` is (key, secret) only when sharing is on;
    ``verify`` is what the libraries pass to requests (True, or the notebook's CA bundle path).

    The times are the tenant's: issued_at when it issued the token, expires_at when it expires
    (recorded once, see :mod:`deployer_hub.tokenlife`), so a library's own expiry check is right."""
    access = auth_state.get("access_token") or ""
    refresh = auth_state.get("refresh_token") or ""
    expires_at = auth_state.get("expires_at")
    issued_at = auth_state.get("issued_at") or int(time.time())
    expires_in = max(0, int(expires_at - issued_at)) if expires_at else 0
    key, secret = client or ("", "")
    if flavour is Flavour.AGAVE:
        agpy = [{
            "token": access,
            "refresh_token": refresh,
            "tenant_id": tenant_id,
            "api_key": key,
            "api_secret": secret,
            "api_server": base_url,
            "username": username,
            "verify": verify,
            "client_name": "jupyterhub",
            "expires_in": expires_in,
            "created_at": issued_at,
            "expires_at": _ctime(expires_at),
        }]
        current = {
            "tenantid": tenant_id,
            "baseurl": base_url,
            "apikey": key,
            "apisecret": secret,
            "username": username,
            "access_token": access,
            "refresh_token": refresh,
            "created_at": str(issued_at),
            "expires_in": str(expires_in),
            "expires_at": _ctime(expires_at),
            "verify": verify,  # agavepy's restore() from current passes it to requests
        }
        return {".agpy": _json(agpy), "current": _json(current)}
    if flavour is Flavour.TAPIS:
        tapis = {
            "base_url": base_url,
            "tenant_id": tenant_id,
            "username": username,
            "access_token": access,
            "refresh_token": refresh,
            "expires_at": _iso(expires_at),
            "client_id": key,
            "client_key": secret,
            "verify": verify,
        }
        return {"tapis.json": _json(tapis), "tapis_token": access.encode()}
    generic = {"issuer": base_url, "username": username, "access_token": access, "refresh_token": refresh, "expires_at": expires_at}
    return {"token.json": _json(generic)}


def write(directory: str, files: dict[str, bytes], uid: int, gid: int) -> None:
    """Write ``files`` into ``directory`` atomically, 0600, owned by uid:gid.

    Modes are set explicitly, never left to the umask: the token root and the tenant
    directory are 0711 (a notebook's mount, made as root squashed to nobody over NFS, must
    pass through them; nobody may list them), the user's directory 0700."""
    tenant_dir = os.path.dirname(directory)
    for path in (os.path.dirname(tenant_dir), tenant_dir):
        os.makedirs(path, mode=TENANT_DIR_MODE, exist_ok=True)
        os.chmod(path, TENANT_DIR_MODE)
    os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
    os.chown(directory, uid, gid)
    os.chmod(directory, DIR_MODE)
    for name, content in files.items():
        paths.safe_component(name.lstrip("."), "token file name")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, FILE_MODE)
            os.fchown(fd, uid, gid)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, os.path.join(directory, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the renames durable too
    finally:
        os.close(dir_fd)


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _ctime(epoch: int | None) -> str:
    """The Agave CLI's expires_at format, e.g. 'Wed Nov 25 18:00:00 UTC 2026'."""
    if not epoch:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")


def _iso(epoch: int | None) -> str:
    if not epoch:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()
