"""The hub's settings file (``hub.json``) from a validated deployment: a pure function.

The hub image turns it into JupyterHub configuration (``deployer_hub.hubconfig``).
Secrets are not in it: they travel as Docker secrets (``HubSpec.secrets``).
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer_hub import names, netguard
from deployer_hub.settings import (
    AcmeSettings,
    GuardSettings,
    HubSettings,
    NotebookSettings,
    OAuthSettings,
    ProfileSettings,
    ProjectMountSettings,
    StaticProject,
    Settings,
    TasSettings,
    TenantSettings,
)
from deployer_hub.tenants import Flavour

from deployer.config.loader import Deployment
from deployer.config.model import JupyterHubConfig
from deployer.config.options import Profile, ProjectMounts

HUB_ROOT = "/srv/jupyterhub"
#: The hub's databases, in its data directory (Layout.data_dir), mounted at HUB_ROOT/data.
DATABASES = ("jupyterhub.sqlite", "identities.sqlite")
#: The CAs of a private ACME directory's HTTPS, in the hub container (a Docker config).
ACME_CA = f"{HUB_ROOT}/acme-ca.pem"
#: The tenant's extra CA certificates in the hub container (a Docker config; notebooks get the same one).
TENANT_CA = f"{HUB_ROOT}/tenant-ca.pem"

#: On the hub host: one JSON line per deploy, update or destroy (who, what, result).
AUDIT_LOG = "/var/log/deployer/audit.log"


#: Where the Docker proxy's socket appears in the hub container (and in the proxy's).
DOCKER_PROXY_DIR = "/run/deployer-proxy"
DOCKER_PROXY_SOCKET = f"{DOCKER_PROXY_DIR}/docker.sock"


@dataclass(frozen=True)
class Layout:
    """Where things live on the hosts and in the hub container for one deployment."""

    name: str  # e.g. jupyterhub-prod-designsafe: prefix of every Docker object
    state_root: str = "/srv/deployer"  # on the hub's local disk (database) and the NFS export

    @classmethod
    def of(cls, deployment: Deployment, state_root: str = "/srv/deployer") -> "Layout":
        return cls(str(deployment.target).replace(".", "-"), state_root)

    @property
    def network(self) -> str:
        return f"{self.name}-net"

    @property
    def hub_service(self) -> str:
        return f"{self.name}-hub"

    @property
    def hub_relay(self) -> str:
        """The container relaying the hub API for notebooks (deployer_hub.hubrelay): its name is their hub address."""
        return names.fit(f"{self.name}-hubapi", names.SERVICE_NAME_MAX)

    @property
    def data_dir(self) -> str:
        """The hub's database: local disk of the hub node."""
        return f"{self.state_root}/{self.name}/hub-data"

    @property
    def docker_proxy_dir(self) -> str:
        """The hub's Docker proxy's socket (hub's local disk): the hub container mounts this, not the engine's socket."""
        return f"{self.state_root}/{self.name}/docker-proxy"

    @property
    def share_dir(self) -> str:
        """The NFS management share: exported by the hub, mounted on the workers."""
        return f"{self.state_root}/{self.name}/share"

    @property
    def token_root(self) -> str:
        return f"{self.share_dir}/tokens"

    @property
    def notebook_prefix(self) -> str:
        return f"{self.name}-nb"

    @property
    def worker_label(self) -> str:
        """The node label of this deployment's workers: unique to it, so a hub cannot place a notebook on a
        node of another deployment sharing the swarm (they all carry the older, common deployer.worker too)."""
        return f"deployer.worker.{self.name}"

    @property
    def worker_constraint(self) -> str:
        return f"node.labels.{self.worker_label}==true"


def tenant_id(deployment: Deployment) -> str:
    """The tenant's id as the hub renders it into paths ({tenant_id})."""
    config = deployment.config
    return config.tenant if config.login == "local-dev" else config.tenant_info.id


def settings(deployment: Deployment, layout: Layout, *, ssl: bool = True, https_port: int = 443, http_port: int = 80) -> dict:
    """hub.json: the typed contract (deployer_hub.settings) as written for the hub."""
    config = deployment.config
    local_dev = config.login == "local-dev"
    if local_dev:
        tenant = TenantSettings(id=tenant_id(deployment))
    else:
        info = config.tenant_info
        tenant = TenantSettings(
            id=tenant_id(deployment), flavour=info.flavour.value, base_url=info.base_url,
            ca_bundle=TENANT_CA if config.tenant_ca_bundle else None,
            case_insensitive=config.tenant_case_insensitive,
            # Only an OpenID Connect provider is asked for a claim; Agave and Tapis name the user in their profile.
            username_claim=config.oidc_username_claim if info.flavour is Flavour.OIDC else None,
            groups_claim=config.tenant_groups_claim,
        )
    return Settings(
        deployment=str(deployment.target),
        login=config.login,
        tenant=tenant,
        oauth=OAuthSettings(client_id=config.jupyterhub_oauth_client_id, callback_url=config.callback_url),
        # Inside the container the hub always listens on 443 and 80; the service publishes them on the
        # host's https_port/http_port. Redirects go to the port browsers use.
        hub=HubSettings(
            host=config.jupyterhub_host, service_name=layout.hub_service, data_dir=f"{HUB_ROOT}/data",
            https_port=443, public_https_port=config.hub_address.port or https_port, http_port=80,
            ssl_cert=f"{HUB_ROOT}/ssl/cert.pem" if ssl else None, ssl_key="/run/secrets/ssl_key" if ssl else None,
            metrics_scraper=config.jupyterhub_metrics_token is not None,
            api_relay=layout.hub_relay,
            admin_users=list(config.admin_users), admin_groups=list(config.admin_groups),
            acme=AcmeSettings(email=config.jupyterhub_acme_email or "", directory=config.jupyterhub_acme_directory,
                              ca_bundle=ACME_CA if config.jupyterhub_acme_ca_bundle else None,
                              renew_days=config.jupyterhub_acme_renew_days) if config.jupyterhub_tls == "acme" and ssl else None,
        ),
        tas=TasSettings(use_uid=config.use_tas_uid, use_gid=config.use_tas_gid, url=config.tas_base_url,
                        role_account=config.tas_role_account, min_id=config.tas_min_id),
        notebooks=NotebookSettings(
            image=config.jupyter_user_image, network=layout.network, service_prefix=layout.notebook_prefix,
            volume_mounts=[str(m) for m in config.volume_mounts],
            uid=config.jupyteruser_uid, gid=config.jupyteruser_gid,
            uid_range=list(config.notebook_uid_range) if config.notebook_uid_range else None,
            memory_limit=config.notebook_memory_limit, pids_limit=config.notebook_pids_limit,
            start_timeout=config.notebook_start_timeout, node_down_timeout=config.notebook_node_down_timeout, offer_lab=config.notebook_offer_lab,
            cull_idle_timeout=config.cull_idle_notebook_timeout,
            token_root="" if local_dev else layout.token_root,  # no tenant tokens to deliver
            managed_root=layout.share_dir,
            constraints=[layout.worker_constraint], worker_label=layout.worker_label,
            # Notebooks' storage: volumes of the mount guard on each worker (deployer_hub.mountguard), never bind mounts.
            mount_guard=layout.name,
            # The hub's only way to the engine: the Docker proxy's socket (deployer_hub.dockerproxy).
            docker_host=f"unix://{DOCKER_PROXY_SOCKET}",
            # The network guard on each worker firewalls the containers with this label and opens the
            # port the hub reaches them on (deployer_hub.netguard).
            guard=GuardSettings(label=layout.name, port=netguard.NOTEBOOK_PORT + netguard.GUARDED_PORT_OFFSET),
            memory_guarantee=config.notebook_memory_guarantee, cpu_limit=config.notebook_cpu_limit, cpu_guarantee=config.notebook_cpu_guarantee,
            profiles=[profile_settings(p) for p in config.notebook_profiles],
            env=dict(config.notebook_env),
            secret_env={},  # the Docker secrets' names are the hub phase's (hub_spec), made from the values
            allow_named_servers=config.allow_named_servers, named_server_limit=config.named_server_limit_per_user,
            project_mounts=project_settings(config.project_mounts) if config.project_mounts else None,
        ),
    ).to_dict()


def profile_settings(profile: Profile) -> ProfileSettings:
    return ProfileSettings(
        name=profile.name, description=profile.description, image=profile.image,
        memory_limit=profile.memory_limit, memory_guarantee=profile.memory_guarantee,
        cpu_limit=profile.cpu_limit, cpu_guarantee=profile.cpu_guarantee, gpus=profile.gpus,
        volume_mounts=[str(m) for m in profile.volume_mounts], env=dict(profile.env),
        users=list(profile.users), groups=list(profile.groups),
    )


def project_settings(projects: ProjectMounts) -> ProjectMountSettings:
    return ProjectMountSettings(
        host_path=projects.host_path, container_path=projects.container_path, mode=projects.mode, api_url=projects.api_url,
        projects=[StaticProject(p.id, p.name, list(p.users), list(p.groups)) for p in projects.projects],
    )


def notebook_images(config: JupyterHubConfig) -> list[str]:
    """Every image a notebook may run: the default and each profile's (deploy puts them on the workers)."""
    return list(dict.fromkeys([config.jupyter_user_image, *(p.image for p in config.notebook_profiles if p.image)]))


def notebook_secret_prefix(layout: Layout) -> str:
    """Docker secrets holding notebook_secret_env values are named this, then the variable and a digest."""
    return f"{layout.name}-nbenv-"
