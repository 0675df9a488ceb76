"""Projects Deployer manages, and the actions each one offers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    name: str
    summary: str
    available: bool = True


@dataclass(frozen=True)
class Project:
    name: str
    summary: str
    actions: tuple[Action, ...]

    def action(self, name: str) -> Action | None:
        name = name.replace("_", "-")
        return next((a for a in self.actions if a.name == name), None)


JUPYTERHUB = Project(
    "jupyterhub",
    "TACC-style multi-tenant JupyterHub: a hub and notebook workers in a Docker Swarm",
    (
        Action("validate", "check the deployment files without touching any host"),
        Action("config", "print the merged configuration, secrets shown as ***"),
        Action("plan", "show what deploy would change on each host (changes nothing)"),
        Action("deploy", "bring the hosts to the configured state: engines, swarm, NFS share, images, the hub"),
        Action("update", "roll out a new hub image or configuration, keeping notebooks running"),
        Action("status", "nodes, roles, hub health and notebooks per node"),
        Action("destroy", "remove the hub, notebooks and Docker objects; NFS export and swarm; data kept unless --purge-data"),
    ),
)

PROJECTS: dict[str, Project] = {JUPYTERHUB.name: JUPYTERHUB}
