# The "stock" hub of the benchmarks: dockerspawner's SwarmSpawner as shipped (dockerspawner 14, from
# the same image as ours, deployer/jupyterhub), set up only as far as it needs to run Deployer's
# notebook image on this swarm the way ours does. Every setting below is either the same as ours
# or needed for the stock spawner to work at all; docs/benchmarks.md lists them with the reasons.
# The benchmark mounts this file, the TLS pair and the password into /srv/jupyterhub/etc.
import os

c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)
env = os.environ

# --- the hub process: as ours (TLS on 443 behind configurable-http-proxy, API on 8081)
c.JupyterHub.bind_url = "https://0.0.0.0:443"
c.JupyterHub.ssl_cert = "/srv/jupyterhub/etc/cert.pem"
c.JupyterHub.ssl_key = "/srv/jupyterhub/etc/key.pem"
c.ConfigurableHTTPProxy.command = ["configurable-http-proxy", "--redirect-port=80", f"--redirect-to={env['BENCH_PUBLIC_HTTPS_PORT']}"]
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
# Needed: the notebooks reach the hub by its service name on the overlay network.
c.JupyterHub.hub_connect_url = f"http://{env['BENCH_HUB_SERVICE']}:8081"
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
c.JupyterHub.cleanup_servers = False

# --- login: the point is the spawner, so any username with one shared password
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = open("/srv/jupyterhub/etc/password").read().strip()
c.Authenticator.allow_all = True

# --- notebooks
c.JupyterHub.spawner_class = "dockerspawner.SwarmSpawner"
s = c.SwarmSpawner
s.image = env["BENCH_USER_IMAGE"]
s.prefix = env["BENCH_NOTEBOOK_PREFIX"]
# Needed: the stock default is no network at all; the hub must reach the notebook and back.
s.network_name = env["BENCH_NETWORK"]
# Needed here: the stock endpoint is a swarm virtual IP, which routes through the kernel's IPVS;
# this machine's kernel has none (dockerd: "Could not get ipvs family information"), so the hub
# could never reach the notebook. DNS round robin, as ours uses, needs no IPVS.
s.extra_endpoint_spec = {"mode": "dnsrr"}
s.default_url = "/lab"  # as ours with notebook_offer_lab
s.mem_limit = "1G"  # as ours (notebook_memory_limit)
s.extra_placement_spec = {"constraints": ["node.labels.deployer.worker==true"]}  # as ours: workers only
# The same two storage mounts as ours (bind mounts: the only kind the stock spawner builds).
# Needed: the stock spawner does not create a missing bind source, so the benchmark makes
# share/data/<user> beforehand (owned by the image's user, 1000:100).
share = env["BENCH_SHARE"]
s.volumes = {
    f"{share}/data/{{username}}": "/home/jupyter/permanent",
    f"{share}/shared": {"bind": "/home/jupyter/shared", "mode": "ro"},
}
s.start_timeout = 180  # as ours
s.http_timeout = 120  # as ours


# --- the scale measurement (benchmarks/scale.py): while it runs, the notebook image is its stand-in, whose
# tag it writes to this file (USER_IMAGE again once the file is gone); read at every spawn.
def _standin_image(spawner):
    try:
        with open("/srv/jupyterhub/etc/standin-image") as f:
            spawner.image = f.read().strip() or env["BENCH_USER_IMAGE"]
    except FileNotFoundError:
        spawner.image = env["BENCH_USER_IMAGE"]


c.Spawner.pre_spawn_hook = _standin_image
