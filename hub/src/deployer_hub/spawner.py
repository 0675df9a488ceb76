"""The tenant-aware Swarm spawner: one Docker service per user, on worker nodes only.

It keeps dockerspawner's ``SwarmSpawner`` (service naming, state, polling) and fixes
what that one lacks for a TACC-style hub:

* ``volume_mounts`` rendered per user with ``{username}``, ``{tenant_id}`` and
  ``{tas_homeDirectory}``, every value sanitised (:mod:`deployer_hub.mounts`), each mounted as a volume of
  the deployment's mount guard (:mod:`deployer_hub.mountguard`), which on the worker opens the source
  without following a link, at every start: never a bind mount the engine would resolve, links and all;
* the container runs as the TAS uid/gid, else the configured ids, else the image's user;
* the user's token directory mounted where agavepy and tapipy look;
* the tenant's extra CA certificates (a Docker config) in every notebook, where the image's
  entrypoint joins them with the system CAs for requests, agavepy, tapipy, curl and ssl;
* every notebook behind the network guard (:mod:`deployer_hub.netguard`): labelled for it, and
  reached only through the port the guard opens once the container's firewall is loaded;
* Docker calls run on a pool shared by all users, not one thread for the whole hub;
* every wait is bounded, and the usual failures (image missing on the node, bind path
  missing on the node, no worker available) become messages the user reads;
* server profiles (:mod:`deployer_hub.profiles`): the spawn page offers only the user's, and every
  start checks the request on the server; a profile sets image, resources, GPUs, mounts, env;
* the user's projects mounted at every spawn (:mod:`deployer_hub.projects`);
* secret environment values as Docker secrets (the image's entrypoint exports them), never in the
  service's environment; named servers as services of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pprint import pformat
from typing import Any

import docker.errors
from docker.types import (
    ConfigReference,
    ContainerSpec,
    DriverConfig,
    EndpointSpec,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    TaskTemplate,
)
from dockerspawner import SwarmSpawner
from traitlets import Bool, Float, Instance, Integer, List, Unicode, default

from . import mountguard, mounts, names, netguard, paths, tokenfiles
from .auth import Identity, UserFacingError
from .serveroptions import GpuAssignment, ServerOptions
from .settings import IMAGE_GID, IMAGE_UID
from .swarmview import SharedLook, SwarmView

#: Where the tenant's extra CA certificates (a Docker config) appear in a notebook container.
NOTEBOOK_TENANT_CA = "/etc/deployer/tenant-ca.pem"
#: The bundle the image's entrypoint makes from the system CAs and NOTEBOOK_TENANT_CA, and points
#: REQUESTS_CA_BUNDLE, SSL_CERT_FILE and CURL_CA_BUNDLE at (the token files' ``verify`` too).
NOTEBOOK_CA_BUNDLE = "/etc/deployer/ca-bundle.pem"


#: Set by deploy on a notebook service whose worker it takes out of the cluster: that worker's name.
TAKEN_OUT = "deployer.taken-out"
class DockerCalls:
    """What the spawners of one hub share: the pool their Docker calls run in (the stock spawner
    has one thread: one slow call holds every user's spawn), and node names by ID (an ID never
    changes meaning)."""

    def __init__(self, threads: int = 16, look_max_age: float = 5.0) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="docker")
        #: One listing of the swarm that every server's poll reads (deployer_hub.swarmview).
        self.look = SharedLook(look_max_age)
        self.node_names: dict[str, str] = {}
        #: user name -> why their server stopped by itself: kept here, since JupyterHub drops a stopped spawner.
        self.stopped_reasons: dict[str, str] = {}
        #: Held from choosing GPUs until the service that holds them exists (deployer_hub.gpus).
        self.gpu_lock = asyncio.Lock()

    #: Seconds after its server ended that a notebook service no hub removed is removed (see SwarmView.ended).
    ended_service_age = 600.0
    _swept = 0.0

    async def sweep(self, view: SwarmView, spawner: TenantSwarmSpawner) -> None:
        """Once per listing: remove the services whose server ended long ago and that no hub removed (JupyterHub
        removes a server's service when it sees it stop; one it no longer knows would stay in the swarm for good)."""
        if view.taken <= self._swept:
            return
        self._swept = view.taken
        for service in view.ended(self.ended_service_age):
            name = (service.get("Spec") or {}).get("Name", service["ID"])
            try:
                await spawner.docker("remove_service", service["ID"])
                spawner.log.info("Removed the notebook service %s: its server ended over %.0f minutes ago", name, self.ended_service_age / 60)
            except docker.errors.APIError as exc:
                spawner.log.warning("Could not remove the ended notebook service %s: %s", name, exc)

    def __deepcopy__(self, memo: dict) -> DockerCalls:
        return self  # traitlets copies configuration values; this one is shared by design


class TenantSwarmSpawner(ServerOptions, SwarmSpawner):
    tenant_id = Unicode(config=True, help="Tenant id, for {tenant_id} in volume_mounts and the token directory.")
    volume_mounts = List(Unicode(), config=True, help="host_path:container_path:ro|rw templates, rendered per user.")
    token_root = Unicode("", config=True, help="Root of the per-user token directories (as the authenticator's); empty: none mounted.")
    token_mount_path = Unicode(tokenfiles.MOUNT_PATH, config=True, help="Where the user's token directory appears in the container.")
    notebook_uid = Integer(None, allow_none=True, config=True, help="uid when TAS gives none (None: the image's user).")
    notebook_gid = Integer(None, allow_none=True, config=True, help="gid when TAS gives none (None: the image's group).")
    worker_constraints = List(Unicode(), ["node.labels.deployer.worker==true"], config=True, help="Placement constraints: workers only.")
    worker_label = Unicode("deployer.worker", config=True, help="The node label (value true) of the deployment's workers (where GPUs are looked for).")
    docker_threads = Integer(16, config=True, help="Threads for Docker API calls, shared by all users' spawns.")
    ready_interval = Float(0.1, config=True, help="Seconds between checks that a started notebook accepts connections.")
    task_timeout = Float(120.0, config=True, help="Seconds to wait for the notebook's task to run before giving up with a message.")
    ca_config = Unicode(
        "", config=True,
        help="Name of the Docker config holding the tenant's extra CA certificates (hub.json notebooks.ca_config); "
        "empty: none. Mounted read-only at ca_mount_path; the image's entrypoint makes ca_bundle_path from it.",
    )
    ca_mount_path = Unicode(NOTEBOOK_TENANT_CA, config=True, help="Where the ca_config file appears in the notebook.")
    ca_bundle_path = Unicode(NOTEBOOK_CA_BUNDLE, config=True, help="The combined bundle (system CAs + ca_config) the entrypoint writes.")
    offer_lab = Bool(True, config=True, help="Open JupyterLab after login (else the classic notebook).")
    pids_limit = Integer(
        4096, config=True,
        help="Most processes and threads one notebook may run (a fork bomb stops there, not at the worker's limit). 0: no limit.",
    )
    guard_label = Unicode(
        "", config=True,
        help=f"The deployment's name: notebook containers get the label {netguard.LABEL}=<this>, which the network guard "
        "on each worker firewalls. Empty: no guard (the hub reaches the server on its own port).",
    )
    guarded_port = Integer(
        netguard.NOTEBOOK_PORT + netguard.GUARDED_PORT_OFFSET, config=True,
        help="The port the network guard redirects to the server's once the container's firewall is loaded: the hub "
        "reaches notebooks only there, so it never routes a user to an unguarded server.",
    )
    guard_timeout = Float(30.0, config=True, help="Seconds a started server may wait for its worker's network guard before the start fails.")
    mount_guard = Unicode(
        "", config=True,
        help="The deployment whose mount guard (deployer_hub.mountguard, a volume driver on every worker) mounts the "
        "notebooks' storage: each mount is a volume of that driver, whose source the guard opens on the worker without "
        "following a link. Empty: plain bind mounts (a hub without the guard; the deployment's Docker proxy refuses them).",
    )
    managed_root = Unicode(
        "", config=True,
        help="Mount sources below this directory (the share the hub exports) are created by the hub when missing, "
        "owned by the notebook's uid/gid. Sources elsewhere must already exist on the workers.",
    )

    node_down_timeout = Float(
        15.0, config=True,
        help="Seconds the node running a notebook may be down or unreachable before the server counts as stopped "
        "(Swarm keeps reporting its task as running): the user is told and can start it again on a healthy worker.",
    )

    docker_calls = Instance(
        "deployer_hub.spawner.DockerCalls", allow_none=True, config=True,
        help="The thread pool for Docker API calls and the cache of node names. The hub's configuration gives every "
        "spawner the same one (one pool sized for the concurrent users); a spawner without one makes its own.",
    )

    @default("default_url")
    def _default_url_default(self) -> str:
        return "/lab" if self.offer_lab else "/tree"

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        # The stock spawner asks the *hub's* engine for the image's command, which fails on a
        # multi-node swarm where only the workers hold the user image.
        return ["jupyterhub-singleuser"]

    @default("use_internal_hostname")
    def _internal_hostname_default(self) -> bool:
        return True  # reach the notebook by its service name on the overlay network

    @default("name_template")
    def _name_template_default(self) -> str:
        # Named servers get services of their own. The username is escaped with '-' as the escape character
        # ('-' itself becomes -2d), so no escaped username holds '--' and no two names meet.
        return "{prefix}-{username}--{servername}" if self.name else "{prefix}-{username}"

    @default("object_name")
    def _object_name_default(self) -> str:
        # A long username (escaped, behind the deployment's prefix) would exceed Docker's 63
        # characters: the service could not be created. Shortened names stay unique and stable.
        return names.fit(self._render_templates(self.name_template))

    # --- concurrency ----------------------------------------------------------------------

    @property
    def calls(self) -> DockerCalls:
        if self.docker_calls is None:
            self.docker_calls = DockerCalls(self.docker_threads)
        return self.docker_calls

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self.calls.pool

    # --- identity and mounts --------------------------------------------------------------

    _identity: Identity | None = None

    def apply_identity(self, identity: Identity) -> None:
        """Called by the tenant authenticator before every start."""
        self._identity = identity

    @property
    def run_as(self) -> tuple[int | None, int | None]:
        identity = self._identity or Identity()
        uid = identity.uid if identity.uid is not None else self.notebook_uid
        gid = identity.gid if identity.gid is not None else self.notebook_gid
        return uid, gid

    def rendered_mounts(self) -> list[mounts.RenderedMount]:
        home = self._identity.home_directory if self._identity else None
        try:
            values = mounts.template_values(self.user.name, self.tenant_id, home, self.name or "")
            rendered = mounts.render(list(self.volume_mounts), values) + self._project_mounts
        except (mounts.MountRenderError, mounts.MountError, paths.UnsafeName) as exc:
            self.log.error("Cannot render the mounts of %s: %s", self.user.name, exc)
            raise UserFacingError(403, f"Your storage cannot be set up: {exc}. Please contact support.") from None
        if self.token_root:
            source = tokenfiles.user_dir(self.token_root, self.tenant_id, self.user.name)
            rendered.extend(mounts.render([f"{source}:{self.token_mount_path}:rw"], {}))
        return rendered

    def _docker_mount(self, m: mounts.RenderedMount) -> Mount:
        # The share reaches the workers by their own NFS mount (deploy's fstab line); the mount guard there opens it.
        if not self.mount_guard:
            return Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
        # no_copy: else the engine copies the image's files at the target into an empty source.
        return Mount(target=m.target, source=mountguard.volume_name(self.mount_guard, m.source), type="volume", read_only=m.read_only,
                     no_copy=True, driver_config=DriverConfig(mountguard.driver_name(self.mount_guard), {mountguard.SOURCE_OPTION: m.source}))

    @property
    def mounts(self) -> list[Mount]:  # rendered per user, unlike the stock property's
        return [self._docker_mount(m) for m in self.rendered_mounts()]

    # --- the service ----------------------------------------------------------------------

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        if self.profile:  # (the deployment's notebook_env is in `environment`, which the authenticator also sets)
            env.update(self.profile.env)
        env["HOME"] = "/home/jupyter"
        if self.token_root:
            env["AGAVE_CACHE_DIR"] = self.token_mount_path
            env["TAPIS_TOKEN_FILE"] = f"{self.token_mount_path}/tapis.json"
        if self.ca_config:
            # Read by the image's entrypoint (public paths; a CA certificate is no secret).
            env["DEPLOYER_TENANT_CA"] = self.ca_mount_path
            env["DEPLOYER_CA_BUNDLE"] = self.ca_bundle_path
        return env

    async def ca_configs(self) -> list[ConfigReference]:
        """The tenant CA config for the service (Docker needs its ID as well as its name)."""
        if not self.ca_config:
            return []
        try:
            found = await self.docker("inspect_config", self.ca_config)
        except docker.errors.NotFound:
            self.log.error("The tenant CA config %s does not exist (redeploy the hub)", self.ca_config)
            raise UserFacingError(503, "Your server cannot be set up: the tenant's CA certificates are missing on the swarm. Please contact support.") from None
        return [ConfigReference(found["ID"], self.ca_config, filename=self.ca_mount_path, uid="0", gid="0", mode=0o444)]

    def _prepare_managed(self, rendered: list[mounts.RenderedMount], created: list[mounts.RenderedMount], uid: int, gid: int) -> None:
        """Below the share (which the hub sees as the workers do): make the missing directories of ``created``,
        owned by the user, and check every source there as the workers' mount guards will, so a user reads at
        once which of her mounts passes through a link. Neither ever follows a link a user could have made."""
        root = self.managed_root.rstrip("/")
        if not root:
            return
        for m in rendered:
            if not m.source.startswith(root + "/"):
                continue
            try:
                if m in created and not m.read_only:
                    for path in mountguard.make_dirs_beneath(root, m.source, 0o750, uid, gid):
                        self.log.info("Created %s for %s", path, self.user.name)
                os.close(mountguard.open_beneath(root, m.source))
            except mountguard.Refused as exc:
                self.log.error("Refused %s's mount %s: %s", self.user.name, m.target, exc)
                raise UserFacingError(403, f"Your storage at {m.target} cannot be mounted: {exc}. Please contact support.") from None

    def _personal_dirs(self) -> list[str]:
        """The user's own directories below the share: the sources of templates with {username} (not a shared or
        a project directory), and the token directory."""
        root = self.managed_root.rstrip("/")
        values = mounts.template_values(self.user.name, self.tenant_id, self._identity.home_directory if self._identity else None, "")
        own = [m.source for spec in self.volume_mounts if "{username}" in spec.split(":", 1)[0]
               for m in mounts.render([spec], values) if not m.read_only]
        if self.token_root:
            own.append(tokenfiles.user_dir(self.token_root, self.tenant_id, self.user.name))
        return [d for d in dict.fromkeys(own) if root and d.startswith(root + "/")]

    def _reown(self, uid: int, gid: int) -> None:
        """Once, when the deployment switched from one shared uid to each user's own (notebook_uid_range): everything
        in the user's own directories that root does not own becomes theirs, never following a link."""
        for top in self._personal_dirs():
            changed = 0
            try:
                for _, dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
                    for name in (".", *dirs, *files):
                        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        if info.st_uid != 0 and (info.st_uid, info.st_gid) != (uid, gid):
                            os.chown(name, uid, gid if info.st_gid != 0 else -1, dir_fd=dir_fd, follow_symlinks=False)
                            changed += 1
            except OSError as exc:
                self.log.error("Re-owning %s's %s to %s:%s failed: %s", self.user.name, top, uid, gid, exc)
                raise UserFacingError(503, "Your files could not be moved to your own user id. Please contact support.") from None
            self.log.info("Re-owned %d entries of %s to %s's own id %s:%s", changed, top, self.user.name, uid, gid)
        done = getattr(self.authenticator, "identity_reowned", None)
        if done is not None:
            done(self.user.name)

    async def create_object(self) -> dict:
        uid, gid = self.run_as
        if uid == 0 or gid == 0:  # whatever TAS or the configuration says: a notebook never runs as root
            self.log.error("Refusing to start %s's notebook as uid/gid %s:%s", self.user.name, uid, gid)
            raise UserFacingError(403, "Your server cannot start: it would run as the root user or group. Please contact support.")
        await self.find_projects()
        rendered = self.rendered_mounts()
        # (a project's directory is the site's: never made here, owned by whoever started first)
        # (on the Docker pool: file system calls on the share, which may be NFS, never hold the hub's event loop)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, self._prepare_managed, rendered, [m for m in rendered if m not in self._project_mounts],
            uid if uid is not None else IMAGE_UID, gid if gid is not None else IMAGE_GID)
        if self._identity is not None and self._identity.reown and uid is not None and gid is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self._reown, uid, gid)
        async with self.calls.gpu_lock if self.gpus else contextlib.nullcontext():
            gpu = await self.gpu_assignment()
            return await self._create(uid, gid, gpu)

    async def _create(self, uid: int | None, gid: int | None, gpu: GpuAssignment) -> dict:
        container = dict(image=self.image, env={**self.get_env(), **gpu.env}, args=(await self.get_command()), mounts=self.mounts,
                         labels={netguard.LABEL: self.guard_label} if self.guard_label else None,
                         configs=(await self.ca_configs()) or None,
                         secrets=(await self.secrets(uid, gid)) or None,
                         # No capabilities at all, even for a process that became uid 0 somehow; the image's
                         # entrypoint also sets no_new_privs, so no setuid program can raise privileges.
                         cap_drop=["ALL"])
        # Always numeric uid:gid (the image's own 1000:100 where neither TAS nor the configuration gives one): a bare
        # uid runs with gid 0, and the Docker proxy refuses what it cannot check against the deployment's floors.
        container["user"] = f"{uid if uid is not None else IMAGE_UID}:{gid if gid is not None else IMAGE_GID}"
        container.update(self.extra_container_spec)
        resources = Resources(
            mem_limit=self.mem_limit,
            mem_reservation=self.mem_guarantee,
            cpu_limit=int(self.cpu_limit * 1e9) if self.cpu_limit else None,
            cpu_reservation=int(self.cpu_guarantee * 1e9) if self.cpu_guarantee else None,
            **self.extra_resources_spec,
        )
        if self.pids_limit:
            resources.setdefault("Limits", {})["Pids"] = self.pids_limit  # Docker API 1.41 (20.10); docker-py has no argument
        task = TaskTemplate(
            container_spec=ContainerSpec(**{k: v for k, v in container.items() if v is not None}),
            resources=resources,
            networks=[self.network_name] if self.network_name else [],
            placement=Placement(constraints=[*self.worker_constraints, *gpu.constraints] or None, **self.extra_placement_spec),
            # A failed notebook is reported to the user, not restarted behind their back.
            restart_policy=RestartPolicy(condition="none"),
            **self.extra_task_spec,
        )
        try:
            return await self._create_service(task, gpu.labels)
        except docker.errors.APIError as exc:
            self.log.error("Creating the service of %s failed: %s", self.user.name, exc)
            raise UserFacingError(503, f"Your server could not be created: {exc.explanation or exc}. Please contact support.") from None

    async def _create_service(self, task: TaskTemplate, labels: dict[str, str] | None = None) -> dict:
        service = await self.docker(
            "create_service", task_template=task, endpoint_spec=EndpointSpec(**{"mode": "dnsrr", **self.extra_endpoint_spec}), name=self.service_name,
            labels={"deployer.user": self.user.name, "deployer.tenant": self.tenant_id, "deployer.server": self.name or "",
                    "deployer.profile": self.profile.name if self.profile else "", **(labels or {})}, **self.extra_create_kwargs,
        )
        return service

    async def start_object(self) -> None:
        """Wait, bounded, until the task runs; translate failures into the user's words.

        A service that failed to start is removed here: JupyterHub only stops servers that
        poll as running, so a dead service would otherwise stay behind.
        """
        try:
            await self._wait_running()
            await self._wait_listening()
        except UserFacingError:
            try:
                await self.remove_object()
            except docker.errors.APIError as exc:
                self.log.warning("Could not remove the failed service of %s: %s", self.user.name, exc)
            raise

    async def _wait_running(self) -> None:
        deadline = time.monotonic() + self.task_timeout
        delay = 0.2
        last = "not scheduled yet"
        while time.monotonic() < deadline:
            task = await self.get_task()
            if task:
                status = task.get("Status", {})
                state = status.get("State", "").lower()
                if state == "running":
                    return
                problem = status.get("Err") or ""
                if state in {"rejected", "failed", "shutdown", "orphaned", "remove", "complete"}:
                    raise UserFacingError(503, await self._explain(task, problem or status.get("Message", state)))
                last = problem or status.get("Message") or state
                if state == "pending" and "no suitable node" in last:
                    raise UserFacingError(503, "No worker node can run your server right now (" + last.split("(", 1)[-1].rstrip(")") + "). Please try again later or contact support.")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        raise UserFacingError(504, f"Your server did not start within {int(self.task_timeout)} seconds (last state: {last}). Please try again.")

    async def _wait_listening(self) -> None:
        """Until the notebook accepts connections, checked every ready_interval (bounded by http_timeout).

        JupyterHub's own check, which runs once start() returns, retries after random waits of up to
        0.2, 0.4, 0.8, 1.6, 3.2 and then 5 s: on its own it notices a server that is up about a second
        late on average, up to 5 s. Once the port is open here, that check passes at its first try."""
        host, port = await self.get_ip_and_port()
        deadline = time.monotonic() + self.http_timeout
        unguarded_since: float | None = None
        guarded = not self.guard_label  # known once the server's own port stops answering at all
        while time.monotonic() < deadline:
            if await self._accepts(host, port):
                return
            if not guarded:
                # The gate is shut: either the server is not up yet, or its firewall is not loaded. Its own
                # port tells them apart: the guard drops connections there (no answer), an unguarded
                # server accepts them, one not listening yet refuses them.
                direct = await self._probe(host, self.port)
                guarded = direct == "dropped"
            if not guarded and direct == "open":
                # The server listens but its firewall is not loaded: the guard is missing or failing.
                unguarded_since = unguarded_since or time.monotonic()
                if time.monotonic() - unguarded_since > self.guard_timeout:
                    node = await self._node_name((await self.get_task() or {}).get("NodeID"))
                    self.log.error("The network guard on %s did not protect %s's notebook within %.0f s (is the container %s-netguard "
                                   "running there? `docker logs` it)", node or "its worker", self.user.name, self.guard_timeout, self.guard_label)
                    raise UserFacingError(503, f"Your server started, but the network protection on {node or 'its worker'} did not "
                                               "come up, so it was stopped. Please try again later or contact support.")
            await asyncio.sleep(self.ready_interval)
        # not listening in time: JupyterHub's own check fails the spawn with its usual message

    @staticmethod
    async def _accepts(host: str, port: int) -> bool:
        return await TenantSwarmSpawner._probe(host, port) == "open"

    @staticmethod
    async def _probe(host: str, port: int, timeout: float = 0.5) -> str:
        """'open', 'refused' (nothing listens, or a REJECT) or 'dropped' (no answer within ``timeout``:
        on the overlay, only a DROP rule leaves a connection unanswered that long)."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout)
        except asyncio.TimeoutError:
            return "dropped"
        except OSError:
            return "refused"
        writer.close()
        return "open"

    async def get_ip_and_port(self) -> tuple[str, int]:
        """The task's address on the notebook network rather than the service name.

        The hub's HTTP client (aiohttp with aiodns, i.e. c-ares) caches DNS answers for their TTL,
        and Docker's embedded DNS answers with 600 s: a user's server re-created within ten minutes
        of the last one was looked for at the old container's address until http_timeout."""
        port = self.guarded_port if self.guard_label else self.port  # behind the guard: only its gate
        task = await self.get_task()
        for attachment in (task or {}).get("NetworksAttachments") or []:
            if attachment.get("Network", {}).get("Spec", {}).get("Name") == self.network_name and attachment.get("Addresses"):
                return attachment["Addresses"][0].split("/")[0], port
        return self.service_name, port

    async def _explain(self, task: dict, error: str) -> str:
        node = await self._node_name(task.get("NodeID"))
        where = f" on worker {node}" if node else ""
        lowered = error.lower()
        if "no such image" in lowered or "image" in lowered and ("not found" in lowered or "pull access denied" in lowered):
            return f"The notebook image {self.image} is not available{where}. Please contact support (the operator must load it onto the workers)."
        refused = re.search(rf"{mountguard.REFUSED} (/\S*): (.*)", error)
        if refused:  # the worker's mount guard: name the mount as the user sees it
            source, reason = refused.groups()
            target = next((m.target for m in self.rendered_mounts() if m.source == source), source)
            if "does not exist" in reason:
                return f"A storage directory for your server is missing{where}: {reason.split(' does not exist')[0]} (for {target}). Please contact support."
            return f"Your storage at {target} cannot be mounted{where}: {reason}. Please contact support."
        if "bind source path does not exist" in lowered or "invalid mount config" in lowered:
            path = error.rsplit(":", 1)[-1].strip()
            return f"A storage directory for your server is missing{where}: {path}. Please contact support."
        return f"Your server could not start{where}: {error}"

    @default("poll_interval")
    def _poll_interval_default(self) -> int:
        return 10  # with node_down_timeout: a dead worker's servers count as stopped within a minute

    @property
    def stopped_reason(self) -> str:
        """Why the server stopped without the user stopping it (the hub's 'not running' page shows it)."""
        return self.calls.stopped_reasons.get(self._reason_key, "")

    @stopped_reason.setter
    def stopped_reason(self, reason: str) -> None:
        if reason:
            self.calls.stopped_reasons[self._reason_key] = reason
        else:
            self.calls.stopped_reasons.pop(self._reason_key, None)

    @property
    def _reason_key(self) -> str:
        return f"{self.user.name}/{self.name or ''}"

    _node_down_since: float | None = None

    async def _observe(self) -> tuple[dict | None, dict | None, dict | None, bool]:
        """(service, its current task, the task's node, whether that node left the swarm) of this server:
        from the listing all polls share, or asked on its own when the listing does not know it."""
        view = await self.calls.look.view(f"{self.prefix}-", self.docker, self._changed_at)
        await self.calls.sweep(view, self)
        known = view.server(self.service_name, self.object_id)
        if known is not None:
            service, task = known
            self.object_id = service["ID"]
            node_id = task.get("NodeID")  # (the view vouches only for a server with a task)
            node = view.node(node_id) if node_id else None
            return service, task, node, bool(node_id) and node is None
        service = await self.get_object()
        task = await self.get_task() if service else None
        node_id = (task or {}).get("NodeID")
        node, gone = None, False
        if node_id:
            try:
                node = await self.docker("inspect_node", node_id)
            except docker.errors.NotFound:  # removed from the swarm (taken out of the cluster)
                gone = True
            except Exception:  # the engine cannot say: judge by the task alone
                node = None
        return service, task, node, gone

    async def poll(self) -> int | str | None:
        """The stock poll (a missing service is exit status 0, a task no longer starting or running is
        stopped), and a server whose node is down (or whose task Swarm is shutting down) as stopped."""
        service, task, node, gone = await self._observe()
        taken_out = (((service or {}).get("Spec") or {}).get("Labels") or {}).get(TAKEN_OUT)
        if taken_out:  # deploy took its worker out of the cluster (removed from the servers file)
            self.stopped_reason = (f"The machine running your server ({taken_out}) was taken out of service, so your server stopped. "
                                   "Start it again: it will run on another machine, with your files.")
            return f"its worker {taken_out} was taken out of service"
        node_id = (task or {}).get("NodeID")
        if node and node.get("Description", {}).get("Hostname"):
            self.calls.node_names[node_id] = node["Description"]["Hostname"]  # named even once the node is gone
        where = self.calls.node_names.get(node_id or "") or (node_id or "")[:12]
        if gone or ((node or {}).get("Spec") or {}).get("Availability") == "drain":
            self.stopped_reason = (f"The machine running your server ({where}) was taken out of service, so your server stopped. "
                                   "Start it again: it will run on another machine, with your files.")
            return f"node {where} is {'gone' if gone else 'drained'}"
        state = ((node or {}).get("Status") or {}).get("State", "ready")
        if node_id and state != "ready":  # (Swarm may mark its task for shutdown too: the node is why)
            now = time.monotonic()
            self._node_down_since = self._node_down_since or now
            if now - self._node_down_since >= self.node_down_timeout:
                self.stopped_reason = (f"The machine running your server ({where}) went down, so your server stopped. "
                                       "Start it again: it will run on a machine that is up, with your files.")
                self.log.warning("%s: the server's node %s is %s: counted as stopped", self.user.name, where, state)
                return f"node {where} is {state}"
            return None
        self._node_down_since = None
        if not task:
            self.log.warning("Service %s not found", self.service_name)
            return 0
        status = task.get("Status") or {}
        if task.get("DesiredState") in ("shutdown", "remove") and status.get("State") == "running":
            return "its task is being shut down"
        if status.get("State") in {"running", "starting", "pending", "preparing"}:
            return None
        return pformat(status)

    #: When this spawner last created or removed its service (monotonic): its polls read no listing older than that.
    _changed_at = 0.0

    async def start(self):
        self.stopped_reason, self._node_down_since = "", None
        try:
            return await super().start()
        finally:
            self._changed_at = time.monotonic()

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now)
        finally:
            self._changed_at = time.monotonic()

    async def _node_name(self, node_id: str | None) -> str:
        if not node_id:
            return ""
        known = self.calls.node_names
        if node_id not in known:
            try:
                node = await self.docker("inspect_node", node_id)
                known[node_id] = node.get("Description", {}).get("Hostname") or node_id[:12]
            except Exception:  # the name is a courtesy; never fail the message for it
                return node_id[:12]
        return known[node_id]

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._identity:
            state["identity"] = [self._identity.uid, self._identity.gid, self._identity.home_directory]
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if state.get("identity"):
            self._identity = Identity(*state["identity"])
