"""What a user's server may be, beyond the deployment's defaults: the profile they chose (checked on the
hub at every start), their projects, secret environment values. Mixed into TenantSwarmSpawner.

The profile's check is :mod:`deployer_hub.profiles` (pure); this applies its result to the spawner and
asks Docker and the tenant what only they know (secret IDs, the user's projects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import docker.errors
from docker.types import SecretReference
from traitlets import Dict, HasTraits, Instance, Integer, List, Unicode, default

from . import gpus, mounts, paths, profiles, projects
from .auth import UserFacingError
from .settings import IMAGE_GID, IMAGE_UID, ProfileSettings, ProjectMountSettings

#: What a profile sets; the deployment's values come back at the next start.
_PROFILE_TRAITS = ("image", "mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee", "gpus", "volume_mounts")
#: A secret environment value appears as /run/secrets/<this><NAME> (the image's entrypoint exports it).
SECRET_ENV_FILE = "deployer-env-"


@dataclass(frozen=True)
class GpuAssignment:
    """What a start's GPUs add to its service."""

    constraints: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class ServerOptions(HasTraits):
    """Profiles, projects and secret environment of a TenantSwarmSpawner (which provides user, name, log, docker())."""

    profiles = List(
        Instance(ProfileSettings), config=True,
        help="The server profiles (hub.json notebooks.profiles). Empty: one kind of server and no form. Users pick one "
        "by name; the image, resources, mounts and environment come from here only.",
    )
    gpus = Integer(0, config=True, help="GPUs the server gets (deployer_hub.gpus: a worker's and devices chosen by the hub); set by the profile.")
    secret_env = Dict(
        Unicode(), config=True,
        help="Environment variable -> name of the Docker secret holding its value (hub.json notebooks.secret_env).",
    )
    project_mounts = Instance(ProjectMountSettings, allow_none=True, config=True, help="Mount each of the user's projects (None: off).")

    # --- what the user may ask for: a profile by name, nothing else --------------------------

    @default("options_form")
    def _options_form_default(self) -> Any:
        return lambda spawner: spawner.profile_form()

    @default("options_from_form")
    def _options_from_form_default(self) -> Any:
        def options_from_form(formdata: dict) -> dict:
            try:
                return profiles.from_form(formdata)
            except profiles.ProfileRefused as exc:
                self.log.warning("Refused %s's spawn form: %s", self.user.name, exc)
                raise UserFacingError(403, str(exc)) from None
        return options_from_form

    @default("apply_user_options")
    def _apply_user_options_default(self) -> Any:
        return lambda spawner, options: spawner.apply_profile(options)

    def _groups(self) -> list[str]:
        return [group.name for group in getattr(self.user, "groups", None) or []]

    def profile_form(self) -> str:
        mine = profiles.allowed(self.profiles, self.user.name, self._groups())
        stored = (self.orm_spawner.user_options or {}) if self.orm_spawner is not None else {}
        if stored and self.orm_spawner is not None:
            try:  # a choice kept from before (the user left a group, the operator renamed it): forget it
                profiles.choose(self.profiles, stored, self.user.name, self._groups())
            except profiles.ProfileRefused:
                self.orm_spawner.user_options = {}
        return profiles.form(mine, (stored or {}).get(profiles.FIELD))

    def apply_profile(self, options: dict) -> None:
        """At every start (form, API, or a choice kept in the database): the requested profile if the user
        may use it, else 403; its settings replace the deployment's where it sets them."""
        if self.name:  # a named server's name is in its service's name and its mounts: one spelling only
            try:
                paths.safe_component(self.name, "server name")
            except paths.UnsafeName:
                raise UserFacingError(403, f"The server name {self.name[:64]!r} cannot be used: use lower-case letters, digits "
                                           "and . _ @ + - only.") from None
        if not self.profiles:
            if options:
                self.log.warning("Refused %s's server options %s: this hub has no profiles", self.user.name, sorted(map(str, options))[:5])
                raise UserFacingError(403, "This hub offers one kind of server and accepts no options in a server request.")
            return
        try:
            profile = profiles.choose(self.profiles, options, self.user.name, self._groups())
        except profiles.ProfileRefused as exc:
            self.log.warning("Refused %s's server request: %s", self.user.name, exc)
            raise UserFacingError(403, str(exc)) from None
        self.log.info("%s's server %r uses profile %r", self.user.name, self.name, profile.name)
        # JupyterHub keeps a server's spawner from one start to the next: start from the deployment's values.
        if self._configured is None:
            self._configured = {trait: getattr(self, trait) for trait in _PROFILE_TRAITS}
        for trait, value in self._configured.items():
            setattr(self, trait, value)
        self.profile = profile
        if profile.image:
            self.image = profile.image
        for trait, value in (("mem_limit", profile.memory_limit), ("mem_guarantee", profile.memory_guarantee),
                             ("cpu_limit", profile.cpu_limit), ("cpu_guarantee", profile.cpu_guarantee)):
            if value is not None:
                setattr(self, trait, value)
        self.gpus = profile.gpus
        self.volume_mounts = [*self.volume_mounts, *profile.volume_mounts]

    profile: ProfileSettings | None = None
    _configured: dict[str, Any] | None = None

    _project_mounts: list[mounts.RenderedMount] = []

    async def find_projects(self) -> None:
        """The user's projects, afresh at every start (one they left is not mounted again)."""
        settings = self.project_mounts
        self._project_mounts = []
        if settings is None:
            return
        fetch = None
        if settings.api_url:
            fetch = await self._projects_fetch()
        try:
            found = await projects.user_projects(settings, username=self.user.name, groups=self._groups(), fetch=fetch)
            self._project_mounts = projects.project_mounts(settings, found, tenant_id=self.tenant_id)
        except projects.ProjectsError as exc:
            self.log.error("Cannot list %s's projects: %s", self.user.name, exc)
            raise UserFacingError(503, f"{exc} Your server did not start without your projects.") from None
        except (mounts.MountError, mounts.MountRenderError, paths.UnsafeName) as exc:
            self.log.error("Cannot mount %s's projects: %s", self.user.name, exc)
            raise UserFacingError(403, "Your projects cannot be mounted (a project directory is not a safe path). Please contact support.") from None
        self.log.info("%s: %d project(s) mounted", self.user.name, len(self._project_mounts))

    async def _projects_fetch(self) -> Any:
        """GET with the user's own access token, through the authenticator's client (the tenant's CAs, its timeout)."""
        auth_state = await self.user.get_auth_state() or {}
        token = auth_state.get("access_token")
        authenticator = getattr(self, "authenticator", None)
        if not token or authenticator is None or not hasattr(authenticator, "fetch_with_token"):
            raise UserFacingError(503, "Your projects cannot be listed: you are not logged in with the tenant. Please log in again.")

        async def fetch(url: str) -> Any:  # (failures: user_projects turns them into one safe reason)
            return await authenticator.fetch_with_token(url, token)
        return fetch

    async def secrets(self, uid: int | None, gid: int | None) -> list[SecretReference]:
        """The secret environment values, each readable by the notebook's uid only."""
        found = []
        for variable, secret in sorted(self.secret_env.items()):
            try:
                info = await self.docker("inspect_secret", secret)
            except docker.errors.NotFound:
                self.log.error("The Docker secret %s (for %s) does not exist (redeploy the hub)", secret, variable)
                raise UserFacingError(503, "Your server cannot be set up: a setting of this hub is missing on the swarm. Please contact support.") from None
            found.append(SecretReference(info["ID"], secret, filename=f"{SECRET_ENV_FILE}{variable}",
                                         uid=str(uid if uid is not None else IMAGE_UID), gid=str(gid if gid is not None else IMAGE_GID), mode=0o400))
        return found

    async def gpu_assignment(self) -> GpuAssignment:
        """The worker and devices of this start's GPUs (call it holding the hub's GPU lock until the service exists),
        or, without GPUs, none visible even in an image that asks for all."""
        if not self.gpus:
            return GpuAssignment(env={"NVIDIA_VISIBLE_DEVICES": gpus.NO_GPU})
        nodes = await self.docker("nodes")
        held = gpus.in_use(await self.docker("services", filters={"name": f"{self.prefix}-", "label": gpus.LABEL}))
        try:
            worker, devices = gpus.choose(filter(None, (gpus.inventory(n, self.worker_label) for n in nodes)), held, self.gpus)
        except gpus.NoFreeGpus as exc:
            self.log.warning("No GPUs for %s's server: %s", self.user.name, exc)
            raise UserFacingError(503, str(exc)) from None
        self.log.info("%s's server gets GPU(s) %s of %s", self.user.name, ",".join(devices), worker.hostname)
        visible = ",".join(devices)
        return GpuAssignment(constraints=[f"node.id=={worker.node_id}"],
                             # (NVIDIA's runtime shows the container these only, numbered from 0: no CUDA_VISIBLE_DEVICES)
                             env={"NVIDIA_VISIBLE_DEVICES": visible},
                             labels={gpus.LABEL: gpus.label(worker.node_id, devices)})
