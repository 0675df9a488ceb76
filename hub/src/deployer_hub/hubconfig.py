"""JupyterHub configuration from Deployer's settings file and secret files.

The hub image's ``jupyterhub_config.py`` is two lines calling :func:`apply`; everything
deployment-specific comes from ``hub.json`` (written by ``deployer`` from the validated
deployment) and from secret files (Docker secrets under ``/run/secrets``), so no one
edits Python and no secret travels in an environment variable.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .auth import AgaveOAuthenticator, TapisOAuthenticator, TenantOIDCAuthenticator, page_notice
from .settings import Settings
from .spawner import NOTEBOOK_CA_BUNDLE, DockerCalls, TenantSwarmSpawner

AUTHENTICATORS = {"agave": AgaveOAuthenticator, "tapis": TapisOAuthenticator, "oidc": TenantOIDCAuthenticator}

#: What hub admins (admin_users, admin_groups) may do: the admin panel, users, their servers (start, stop).
#: Not JupyterHub's admin role (which cannot be narrowed): no entering a user's server (access:servers: their
#: files, their token files), no reading their auth state (the tenant's tokens), no tokens as them, no proxy or
#: shutdown. An admin_groups claim comes from the tenant, so what it grants must not reach other users' data.
ADMIN_ROLE = "deployer-admin"
ADMIN_SCOPES = ["admin-ui", "users", "delete:users", "read:roles:users", "servers", "list:groups", "read:groups",
                "list:services", "read:services", "read:hub", "read:metrics"]


class Secrets:
    def __init__(self, directory: str):
        self.directory = Path(directory)

    def __call__(self, name: str, *, required: bool = True) -> str | None:
        path = self.directory / name
        if not path.exists():
            if required:
                raise RuntimeError(f"secret file {path} is missing")
            return None
        return path.read_text().strip()


def apply(c: Any, settings_path: str, secrets_dir: str = "/run/secrets") -> Settings:
    settings = Settings.from_dict(json.loads(Path(settings_path).read_text()))
    secret = Secrets(secrets_dir)
    tenant, hub, nb = settings.tenant, settings.hub, settings.notebooks

    # --- the hub process
    # Our pages first (each extends the stock one of the same name): why a server stopped by itself.
    c.JupyterHub.template_paths = [str(Path(__file__).with_name("templates"))]
    c.JupyterHub.bind_url = f"https://0.0.0.0:{hub.https_port}" if hub.ssl_cert else f"http://0.0.0.0:{hub.https_port}"
    if hub.ssl_cert:
        c.JupyterHub.ssl_cert = hub.ssl_cert
        c.JupyterHub.ssl_key = hub.ssl_key
        # Plain HTTP on the redirect port only answers with a redirect to HTTPS.
        # configurable-http-proxy compares --redirect-to (a string) with the number 443, so passing 443
        # put ":443" into every redirect; without it, it redirects to its own port, 443, and names none.
        redirect_to = [] if hub.public_https_port == 443 else [f"--redirect-to={hub.public_https_port}"]
        c.ConfigurableHTTPProxy.command = ["configurable-http-proxy", f"--redirect-port={hub.http_port}", *redirect_to]
        if hub.acme:
            _acme_certificate(c, settings, settings_path)
    c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
    # The proxy runs in the hub's own container (JupyterHub starts it), so it reaches the hub over
    # loopback. With the service name it resolved that name in Docker's DNS (answered by dockerd)
    # for every request it forwarded, because configurable-http-proxy opens a new connection to the
    # hub per request: about 0.25 ms of CPU per request in dockerd and the proxy, ~6 % of the hub's
    # throughput under load (docs/benchmarks.md, section 4). The services (the idle culler) already
    # use loopback (JupyterHub's default for a hub bound to 0.0.0.0). Also, while the swarm stops
    # the hub (a few seconds after taking its name out of DNS) the hub now answers until it exits,
    # instead of 503s. The notebooks, in other containers, still use the service name:
    c.JupyterHub.hub_connect_url = "http://127.0.0.1:8081"
    # (through the relay, whose address, unlike the hub container's, outlives a hub replacement: hubrelay)
    c.Spawner.hub_connect_url = f"http://{hub.api_relay or hub.service_name}:8081"
    c.JupyterHub.db_url = f"sqlite:///{hub.data_dir}/jupyterhub.sqlite"
    c.JupyterHub.cookie_secret = bytes.fromhex(secret("cookie_secret"))
    c.CryptKeeper.keys = [bytes.fromhex(secret("crypt_key"))]
    c.JupyterHub.cleanup_servers = False  # a hub restart leaves running notebooks alone
    c.JupyterHub.cleanup_proxy = True
    c.ConfigurableHTTPProxy.pid_file = f"{hub.data_dir}/proxy.pid"

    # --- login
    if settings.login == "local-dev":
        _local_dev_login(c, secret)
    else:
        _tenant_login(c, settings, secret)

    # --- notebooks
    c.JupyterHub.spawner_class = TenantSwarmSpawner
    s = c.TenantSwarmSpawner
    s.image = nb.image
    s.tenant_id = tenant.id
    s.volume_mounts = nb.volume_mounts
    s.token_root = nb.token_root
    s.managed_root = nb.managed_root
    s.network_name = nb.network
    s.prefix = nb.service_prefix
    s.notebook_uid, s.notebook_gid = nb.uid, nb.gid
    s.offer_lab = nb.offer_lab
    s.worker_constraints, s.worker_label = nb.constraints, nb.worker_label
    s.mount_guard = nb.mount_guard or ""
    # Resources for every server; a profile may set its own (deployer_hub.profiles).
    s.mem_limit, s.mem_guarantee = nb.memory_limit, nb.memory_guarantee
    s.cpu_limit, s.cpu_guarantee = nb.cpu_limit, nb.cpu_guarantee
    s.profiles = list(nb.profiles)
    s.environment = dict(nb.env)
    s.secret_env = dict(nb.secret_env)
    s.project_mounts = nb.project_mounts
    c.JupyterHub.allow_named_servers = nb.allow_named_servers
    c.JupyterHub.named_server_limit_per_user = nb.named_server_limit
    s.pids_limit = nb.pids_limit
    s.docker_calls = DockerCalls()  # one pool and node cache for every user's spawner of this hub
    if nb.docker_host:  # the Docker proxy, which allows only what this spawner does
        s.client_kwargs = {"base_url": nb.docker_host}
    if nb.guard:
        s.guard_label, s.guarded_port = nb.guard.label, nb.guard.port
    s.start_timeout = nb.start_timeout
    s.node_down_timeout = nb.node_down_timeout
    s.http_timeout = 120
    # The spawner's own wait for the task ends first, so its message (which node, why) is what users read.
    s.task_timeout = max(30, nb.start_timeout - 30)
    if nb.ca_config and tenant.ca_bundle:
        # The tenant's CA in every notebook, joined there with the image's system CAs; the token
        # files name that bundle as `verify` (agavepy and tapipy hand it to requests).
        s.ca_config = nb.ca_config
        s.ca_bundle_path = NOTEBOOK_CA_BUNDLE
        c.TenantOAuthenticator.notebook_ca_bundle = NOTEBOOK_CA_BUNDLE

    # --- roles and services: admins; idle culling; a metrics scraper that may read /hub/metrics and nothing else
    roles: list[dict] = [{"name": ADMIN_ROLE, "description": "Hub admins: users and their servers, not into them (Deployer)",
                          "scopes": ADMIN_SCOPES, "users": list(hub.admin_users), "groups": list(hub.admin_groups)}]
    services: list[dict] = []
    if nb.cull_idle_timeout:
        roles.append({"name": "idle-culler", "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"], "services": ["idle-culler"]})
        services.append({
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={nb.cull_idle_timeout}", f"--cull-every={max(10, min(300, nb.cull_idle_timeout // 2))}"],
        })
    if hub.metrics_scraper:
        c.JupyterHub.authenticate_prometheus = True  # (the default) without the token, /hub/metrics answers 403
        roles.append({"name": "metrics-scraper", "scopes": ["read:metrics"], "services": ["metrics-scraper"]})
        services.append({"name": "metrics-scraper", "api_token": secret("metrics_token")})
    if hub.acme:  # (see _acme_certificate) the port 80 server and the ACME client; no scopes needed
        services.append({"name": "acme", "command": [sys.executable, "-m", "deployer_hub.acmecert", settings_path]})
    c.JupyterHub.load_roles, c.JupyterHub.services = roles, services
    return settings


LOCAL_DEV_BANNER = ("LOCAL USE ONLY: this hub logs in with a shared password (login: local-dev), "
                    "not with a tenant. Never expose it beyond this machine.")


def _acme_certificate(c: Any, settings: Settings, settings_path: str) -> None:
    """The proxy serves the live pair in the data directory: the self-signed one until the ACME service
    (deployer_hub.acmecert, which also serves port 80 instead of the proxy's redirect port) writes the
    CA's; tlsreload.js gives the proxy each new pair without closing open connections."""
    from . import acmecert  # the acme library: only for hubs that use it

    hub = settings.hub
    paths = acmecert.Paths.of(hub.data_dir)
    acmecert.start_with(paths, Path(hub.ssl_cert or ""), Path(hub.ssl_key or ""), acmecert.host_of(hub.host))
    c.JupyterHub.ssl_cert, c.JupyterHub.ssl_key = str(paths.cert), str(paths.key)
    proxy = shutil.which("configurable-http-proxy")
    if proxy is None:
        raise RuntimeError("configurable-http-proxy is not on PATH")
    c.ConfigurableHTTPProxy.command = ["node", "--require", str(Path(__file__).with_name("tlsreload.js")), os.path.realpath(proxy)]


def _local_dev_login(c: Any, secret: Secrets) -> None:
    """Any username with the shared password: for trying Deployer on one machine, clearly marked."""
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = secret("local_dev_password")
    c.SharedPasswordAuthenticator.allow_all = True
    c.JupyterHub.template_vars = {"announcement": LOCAL_DEV_BANNER, "announcement_login": LOCAL_DEV_BANNER}


def _tenant_login(c: Any, settings: Settings, secret: Secrets) -> None:
    tenant, oauth, tas, nb = settings.tenant, settings.oauth, settings.tas, settings.notebooks
    auth_cls = AUTHENTICATORS[tenant.flavour]
    c.JupyterHub.authenticator_class = auth_cls
    a = c[auth_cls.__name__]
    a.tenant_id = tenant.id
    a.tenant_base_url = tenant.base_url
    a.client_id = oauth.client_id
    a.client_secret = secret("oauth_client_secret")
    a.oauth_callback_url = oauth.callback_url
    a.allow_all = True  # every user of the tenant may use the hub, as TACC's hubs did
    a.token_root = nb.token_root
    if tenant.ca_bundle:
        a.tenant_ca_bundle = tenant.ca_bundle  # added to the system's CAs for the tenant and TAS
    # Pages tell a user what they must know now (e.g. their tokens are not in the notebook).
    c.JupyterHub.template_vars = {"announcement": page_notice}
    a.username_case_insensitive = tenant.case_insensitive
    if tenant.flavour == "oidc":
        a.username_claim = tenant.username_claim or "preferred_username"
    if tenant.groups_claim:  # the tenant's groups become the user's JupyterHub groups at each login
        a.groups_claim = tenant.groups_claim
        a.manage_groups = True
    a.identity_db = f"{settings.hub.data_dir}/identities.sqlite"
    a.tas_min_id = tas.min_id
    if tas.use_uid or tas.use_gid:
        a.use_tas_uid, a.use_tas_gid = tas.use_uid, tas.use_gid
        a.tas_url = tas.url
        a.tas_role_account = tas.role_account
        a.tas_role_password = secret("tas_role_pass")
    # The configured ids reach the token files through the identity (resolve_identity).
    a.notebook_uid, a.notebook_gid = nb.uid, nb.gid
    a.notebook_uid_range = list(nb.uid_range or [])
