"""Simulators of remote services that tests cannot reach (a TACC tenant's OAuth server and TAS)."""

from .tenant import LoginError, TenantSimulator, complete_login

__all__ = ["LoginError", "TenantSimulator", "complete_login"]
