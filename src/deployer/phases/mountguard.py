"""The mount guard on each worker: the mounts deploy allows notebooks, and the container that serves them.

Notebooks get no bind mounts: each mount is a volume of the deployment's mount guard
(``deployer_hub.mountguard``), a Docker volume plugin that opens the source on the worker without following
a link, at every start of a task. Its policy (the rules below) comes from the configuration, not from the
hub; the hub's Docker proxy allows the same rules. It runs as one container per worker beside the swarm (a
:mod:`sidecars` container), from the guards' image, in the engine's mount namespace (``--pid host``).
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from deployer_hub import mountguard, names, netguard, tokenfiles
from deployer_hub.mounts import VolumeMount, pattern

from deployer.config.hubsettings import Layout, tenant_id
from deployer.config.loader import Deployment
from deployer.hosts.commands import Command, sh
from deployer.phases import images, sidecars
from deployer.phases.base import Context, Facts, Phase, Planned

#: SYS_ADMIN to bind and unmount, SYS_PTRACE and SYS_CHROOT to enter the engine's mount namespace (setns),
#: DAC_READ_SEARCH to walk users' directories to a source, SETUID and SETGID to walk them as their owner over
#: NFS with root squashed (setfsuid). Nothing else (no DAC_OVERRIDE: it writes nothing there).
CAPABILITIES = ("SYS_ADMIN", "SYS_PTRACE", "SYS_CHROOT", "DAC_READ_SEARCH", "SETUID", "SETGID")
WHAT = "the notebooks' mount guard"
#: A project's directory appears below project_mounts' container_path under the project's name.
_NAME = "/[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}"


def container_name(layout: Layout) -> str:
    return names.fit(f"{layout.name}-mountguard", names.SERVICE_NAME_MAX)


def _anchor(layout: Layout, host_template: str) -> str:
    """Where nothing is trusted below: the share (the hub, and its users, write there), else the operator's
    own directory in front of the first variable."""
    static = VolumeMount(host_template, "/", "rw").static_host_dir
    share = layout.share_dir
    return share if static == share or static.startswith(share + "/") else posixpath.normpath(static)


def rules(deployment: Deployment, layout: Layout) -> tuple[mountguard.Rule, ...]:
    """Every kind of mount the configuration gives a notebook, as the mount guard and the Docker proxy check them."""
    config = deployment.config
    fixed = {"tenant_id": tenant_id(deployment)}
    found: list[mountguard.Rule] = []
    if config.login != "local-dev":  # the user's token directory
        template = f"{layout.token_root}/{{tenant_id}}/{{username}}"
        found.append(mountguard.Rule(pattern(template, fixed), pattern(tokenfiles.MOUNT_PATH), layout.share_dir))
    for mount in [*config.volume_mounts, *(m for p in config.notebook_profiles for m in p.volume_mounts)]:
        found.append(mountguard.Rule(pattern(mount.host_path, fixed), pattern(mount.container_path, fixed),
                                     _anchor(layout, mount.host_path), mount.read_only))
    if config.project_mounts:
        projects = config.project_mounts
        found.append(mountguard.Rule(pattern(projects.host_path, fixed), pattern(projects.container_path) + _NAME,
                                     _anchor(layout, projects.host_path), projects.mode == "ro"))
    return tuple(dict.fromkeys(found))


def policy(deployment: Deployment, layout: Layout) -> mountguard.Policy:
    return mountguard.Policy(layout.name, rules(deployment, layout))


def sidecar(deployment: Deployment, layout: Layout, image_id: str) -> sidecars.Sidecar:
    options = ("--network", "none", "--pid", "host",
               "--cap-drop", "ALL", *sum((("--cap-add", c) for c in CAPABILITIES), ()),
               # Mounting is what it is for (AppArmor's docker-default profile refuses mount(2)).
               "--security-opt", "apparmor=unconfined", "--security-opt", "no-new-privileges", "--read-only",
               "--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock",
               "--env", f"{mountguard.POLICY_ENV}={policy(deployment, layout).to_json()}",
               "--entrypoint", "python3")
    return sidecars.Sidecar(container_name(layout), layout.name, deployment.config.network_guard_image, image_id, options,
                            (mountguard.AGENT,), what=WHAT)


#: The deployment's notebook containers still on the host removed first, through the live guard (leaving the
#: swarm removes its tasks' containers in the background, and one the engine removes once its volumes' driver is
#: gone stays behind, dead); then the guard's volumes (the engine asks the guard to forget them), then the
#: guard, stopped so that it lets go of its staging mounts, and its record of the volumes. Prints 'removed'
#: when it was there.
REMOVE = ('for i in $(seq 60); do ids=$(docker ps -aq --filter "label=$4"); [ -z "$ids" ] && break; '
          'docker rm --force $ids >/dev/null 2>&1; sleep 0.5; done\n'
          # the volumes by name from the guard itself: a listing would ask every volume driver the engine knows, and
          # each one it keeps that is gone (a destroyed deployment's guard, until the engine restarts) costs 15 s
          'vols=$(docker exec "$1" python3 "$5" --volumes 2>/dev/null) || vols=$(docker volume ls -q --filter "driver=$2" 2>/dev/null)\n'
          '[ -z "$vols" ] || docker volume rm $vols >/dev/null 2>&1 || true\n'
          'if docker container inspect "$1" >/dev/null 2>&1; then docker stop -t 10 "$1" >/dev/null 2>&1; docker rm --force "$1" >/dev/null && echo removed; fi\n'
          'rm -f "$3"')


def driver(layout: Layout) -> str:
    """The volume driver name the guard announces on each worker."""
    return mountguard.driver_name(layout.name)


def remove_command(layout: Layout) -> Command:
    guard = policy_paths(layout)
    return sh(REMOVE, container_name(layout), driver(layout), guard.state, f"{netguard.LABEL}={layout.name}",
              mountguard.AGENT, why=f"remove {WHAT}")


def policy_paths(layout: Layout) -> mountguard.Policy:
    """Where the guard keeps its staging mounts and its record of volumes on a host (the policy's defaults)."""
    return mountguard.Policy(layout.name)


#: On a manager: until the swarm lists the volume driver $2 on node $1 (its scheduler places a notebook, whose
#: mounts need it, only on such nodes). The engine reports it once the new guard has made itself known.
LISTED = ('for i in $(seq 120); do docker node inspect "$1" --format "{{range .Description.Engine.Plugins}}{{println .Name}}{{end}}" | grep -qxF "$2" '
          '&& exit 0; sleep 0.5; done; echo "the swarm does not list the volume driver $2 on node $1 after 60 s (docker logs the mount guard there)" >&2; exit 1')


def plan(ctx: Context, facts: Facts) -> Planned:
    """Start or replace each worker's mount guard when its spec (image ID, policy) differs from the running one; a
    new one is waited for until the swarm lists its driver on that node."""
    planned, hub = Planned(), ctx.deployment.hub
    for host in ctx.deployment.workers:
        f = facts[host.host_id]
        commands = sidecars.commands(sidecar(ctx.deployment, ctx.layout, images.guards_image_id(ctx, facts, host.host_id, WHAT)), f.mount_guard)
        planned.add(host.host_id, *commands)
        if commands and f.mount_guard is None:
            planned.add(hub.host_id, replace(sh(LISTED, f.node_id, driver(ctx.layout),
                                                why=f"wait until the swarm lists the mount guard's driver on {host.host_id}"), timeout=90))
        if not commands:
            planned.ok(host.host_id, "mount guard running")
    return planned


def expect(ctx: Context, facts: Facts, planned: Planned) -> None:
    for host in ctx.deployment.workers:
        image_id = facts[host.host_id].images.get(ctx.deployment.config.network_guard_image) or ""
        facts[host.host_id].mount_guard = (sidecar(ctx.deployment, ctx.layout, image_id).spec_hash, True)


PHASE = Phase("the notebooks' mount guard on every worker", plan, expect)
