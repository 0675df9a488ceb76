"""JupyterHub-side plugins of Deployer.

Everything in this package runs inside the hub container. It must import with
only JupyterHub's own dependencies installed; :mod:`deployer_hub.tenants` uses
the standard library alone so the operator's CLI can share it.
"""

__version__ = "0.2.0"
