"""Deployer: stand up TACC-style multi-tenant JupyterHubs on a Docker Swarm."""

__version__ = "0.2.0"
