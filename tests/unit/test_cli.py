"""The CLI as operators use it: both command styles, init/validate/config, and secrets kept out."""

from __future__ import annotations

import json
import re
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from conftest import CLIENT_SECRET, SCOPE, SECRET_VALUES, TAS_PASSWORD, base_configs, base_hosts, key_body, make_cert, run_cli, run_deployer

from deployer import __version__

REFERENCE = Path(__file__).parent.parent / "fixtures" / "reference"


def test_init_writes_an_example_that_validates(tmp_path: Path) -> None:
    target = tmp_path / "mysite"
    result = run_deployer(["init", str(target)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((target / "site.passwords").stat().st_mode) == 0o600
    assert (target / "extras").is_dir()
    assert (target / ".gitignore").read_text().splitlines()[1:] == ["*.passwords", ".deployer/"]  # secrets stay out of VCS
    # The example documents every key it knows, commented out or not.
    text = (target / "site.configs").read_text()
    for key in ("tenant:", "jupyterhub_tenant_base_url", "jupyterhub_host", "jupyterhub_oauth_client_id", "jupyterhub_cert",
                "volume_mounts", "jupyterhub_image", "jupyter_user_image", "jupyteruser_uid", "jupyteruser_gid", "use_tas_uid",
                "use_tas_gid", "tas_role_account", "cull_idle_notebook_timeout", "notebook_memory_limit", "notebook_offer_lab", "use_stock_nfs",
                "tenant_case_insensitive", "oidc_username_claim", "tas_min_id"):
        assert key in text, key
    assert "tas_role_pass" in (target / "site.passwords").read_text()
    from deployer.config.model import JupyterHubConfig
    from deployer.config.options import NESTED_KEYS

    documented = text + (target / "site.passwords").read_text()
    assert [key for key in JupyterHubConfig.model_fields if key not in documented] == []
    assert [f"{scope}/{key}" for scope, keys in NESTED_KEYS.items() for key in keys if f"{key}:" not in documented] == []

    result = run_deployer(["validate"], target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok jupyterhub.prod.designsafe: tenant designsafe (agave, https://agave.designsafe-ci.org)")
    assert result.stderr == ""  # the example raises no warnings either


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    assert run_cli(["init", str(tmp_path / "s")], tmp_path).exit_code == 0
    (tmp_path / "s" / "site.configs").write_text("# mine\n")
    result = run_cli(["init", str(tmp_path / "s")], tmp_path)
    assert result.exit_code == 2 and "already exist" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "s" / "site.configs").read_text() == "# mine\n"
    assert run_cli(["init", "--force", str(tmp_path / "s")], tmp_path).exit_code == 0
    assert (tmp_path / "s" / "site.configs").read_text() != "# mine\n"


def test_reference_configs_example_validates_with_a_passwords_file(tmp_path: Path) -> None:
    for name in ("tacc.configs", "tacc.hosts", "tacc.passwords"):
        shutil.copy(REFERENCE / name, tmp_path / name)
    os.chmod(tmp_path / "tacc.passwords", 0o600)
    result = run_deployer(["validate"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok jupyterhub.prod.designsafe: tenant designsafe (agave, https://agave.designsafe-ci.org), hub jupyter.designsafe-ci.org on manager1, 2 workers, 2 volume mounts")
    assert lines[1].startswith("ok jupyterhub.staging.designsafe: tenant designsafe (agave, https://agave.designsafe-ci.org), hub jupyter-staging.designsafe-ci.org on manager1, 1 worker, 0 volume mounts")
    assert "staging.designsafe/volume_mounts: no mounts" in result.stderr  # a warning, not an error

    staging = json.loads(run_deployer(["config", "--json", "-i", "staging", "-t", "designsafe"], tmp_path).stdout)[0]
    assert staging["config"]["jupyterhub_image"] == "taccsciapps/jupyterhub:0.8.1"  # the specific scope wins
    assert staging["config"]["jupyter_user_image"] == "taccsciapps/jupyteruser-ds:1.1.0"  # the general one fills in
    assert staging["config"]["notebook_memory_limit"] == "3G"
    assert staging["config"]["cull_idle_notebook_timeout"] == 259200
    assert staging["config"]["use_stock_nfs"] is False
    assert staging["config"]["jupyterhub_oauth_client_secret"] == "***"
    assert [h["host_id"] for h in staging["hosts"]] == ["manager1", "worker2"]
    assert staging["hosts"][0]["cloud"] == "jetstream"
    prod = json.loads(run_deployer(["config", "--json", "-i", "prod", "-t", "designsafe"], tmp_path).stdout)[0]
    assert prod["config"]["use_stock_nfs"] is True


def test_config_never_prints_a_secret(site) -> None:
    cert, key = make_cert()
    configs = base_configs()
    configs[SCOPE].update(use_tas_uid=True, use_tas_gid=True, tas_role_account="jhub-role", jupyterhub_cert=cert)
    s = site(configs=configs, passwords={SCOPE: {"jupyterhub_oauth_client_secret": CLIENT_SECRET, "tas_role_pass": TAS_PASSWORD, "jupyterhub_key": key}})
    for args in (["config"], ["config", "--json"], ["-vv", "config"], ["-a", "config"]):
        result = run_cli(["-i", "prod", "-t", "designsafe", *args], s.path)
        assert result.exit_code == 0, result.output
        for value in (*SECRET_VALUES, *key_body(key)):
            assert value not in result.output
    shown = yaml.safe_load(run_cli(["-i", "prod", "-t", "designsafe", "config"], s.path).stdout)[SCOPE]
    assert shown["jupyterhub_oauth_client_secret"] == "***"
    assert shown["tas_role_pass"] == "***"
    assert shown["jupyterhub_key"] == "***"
    assert shown["tas_role_account"] == "jhub-role"


def test_config_shows_where_each_value_came_from(site) -> None:
    result = run_cli(["-i", "prod", "-t", "designsafe", "-o", "notebook_offer_lab=false", "config"], site().path)
    lines = result.stdout.splitlines()
    assert "  jupyterhub_host: jupyter.example.org  # site.configs: jupyterhub.prod.designsafe" in lines
    assert "  jupyterhub_image: taccsciapps/jupyterhub:0.8.0  # site.configs: jupyterhub" in lines
    assert "  jupyterhub_oauth_client_secret: '***'  # site.passwords: jupyterhub.prod.designsafe" in lines
    assert "  notebook_offer_lab: false  # -o: overrides" in lines
    assert "  tenant: designsafe  # derived from the deployment's tenant scope jupyterhub.prod.designsafe" in lines
    assert "  jupyterhub_tenant_base_url: https://agave.designsafe-ci.org  # derived from the tenant registry" in lines
    assert "  cull_idle_notebook_timeout: 86400  # default" in lines


def test_secret_in_configs_and_open_passwords_file_are_warned(site) -> None:
    configs = base_configs()
    configs[SCOPE]["jupyterhub_oauth_client_secret"] = CLIENT_SECRET
    s = site(configs=configs, passwords=None)
    s.write("site.passwords", {SCOPE: {"tas_role_pass": TAS_PASSWORD}}, mode=0o644)
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], s.path)
    assert result.exit_code == 0, result.output
    assert f"warning: site.configs: {SCOPE}/jupyterhub_oauth_client_secret: is a secret: move it to the passwords file" in result.stderr
    assert "warning: site.passwords: readable by group or others (mode 0644); run: chmod 600" in result.stderr
    assert CLIENT_SECRET not in result.output and TAS_PASSWORD not in result.output


def test_secret_override_is_warned_and_not_echoed(site) -> None:
    result = run_cli(["-i", "prod", "-t", "designsafe", "-o", "jupyterhub_oauth_client_secret=hunter2-override", "validate"], site().path)
    assert result.exit_code == 0
    assert "warning: -o: jupyterhub_oauth_client_secret: is a secret: on the command line it is visible" in result.stderr
    assert "hunter2-override" not in result.output


def test_original_flag_style_and_subcommands_agree(site) -> None:
    s = site()
    a = run_deployer(["-p", "jupyterhub", "-i", "prod", "-t", "designsafe", "-a", "validate"], s.path)
    b = run_deployer(["validate", "-p", "jupyterhub", "-i", "prod", "-t", "designsafe"], s.path)
    c = run_deployer(["execute", "-i", "prod", "-t", "designsafe", "-a", "validate"], s.path)
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout == c.stdout
    d = run_deployer(["-p", "jupyterhub", "-i", "prod", "-t", "designsafe", "-a", "config", "-s", "site.hosts", "-c", "site.configs", "-z", "site.passwords", "-k", "-v"], s.path)
    assert d.returncode == 0 and "jupyterhub_oauth_client_secret: '***'" in d.stdout


def test_version_and_listings() -> None:
    cwd = Path.cwd()
    assert run_deployer(["version"], cwd).stdout.strip() == f"deployer {__version__}"
    assert run_deployer(["list_projects"], cwd).stdout.split()[0] == "jupyterhub"
    assert run_deployer(["list-projects"], cwd).returncode == 0
    for args in (["-p", "jupyterhub", "list-actions"], ["-p", "jupyterhub", "list_actions"], ["list-actions", "-p", "jupyterhub"]):
        result = run_deployer(args, cwd)
        assert result.returncode == 0
        rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
        assert set(rows) == {"validate", "config", "plan", "deploy", "update", "status", "destroy"}
        assert all(row.split()[1] == "available" for row in rows.values()), rows  # the status column, not "not available yet"


def test_unknown_project_and_action(site) -> None:
    s = site()
    result = run_cli(["-p", "abaco", "list-actions"], s.path)
    assert result.exit_code == 2 and "unknown project 'abaco'; known projects: jupyterhub" in result.stderr
    result = run_cli(["-i", "prod", "-t", "designsafe", "-a", "launch"], s.path)
    assert result.exit_code == 2 and "project jupyterhub has no action 'launch'" in result.stderr


def test_unknown_instance_names_what_exists(site) -> None:
    result = run_cli(["-i", "qa", "-t", "designsafe", "validate"], site().path)
    assert result.exit_code == 2
    assert "no stanza for jupyterhub.qa.designsafe in site.configs, site.passwords, site.hosts; deployments found: jupyterhub.prod.designsafe" in result.stderr


def test_without_i_and_t_every_deployment_is_validated(site) -> None:
    result = run_cli(["validate"], site().path)
    assert result.exit_code == 0 and result.stdout.startswith("ok jupyterhub.prod.designsafe")


def test_missing_files_are_named(tmp_path: Path) -> None:
    result = run_cli(["validate", "-i", "prod", "-t", "x"], tmp_path)
    assert result.exit_code == 2
    assert "configs: no configs file: pass -c FILE" in result.stderr
    assert "servers: no servers file: pass -s FILE" in result.stderr


def test_traceback_only_with_vv(site) -> None:
    s = site(configs="jupyterhub: [\n")
    quiet = run_deployer(["validate"], s.path)
    loud = run_deployer(["-vv", "validate"], s.path)
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr


def test_init_local_validates_and_keeps_the_password_private(tmp_path: Path) -> None:
    result = run_deployer(["init", "--local", str(tmp_path / "local")], tmp_path)
    assert result.returncode == 0, result.stderr
    passwords = tmp_path / "local" / "site.passwords"
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    password = yaml.safe_load(passwords.read_text())["jupyterhub.local.dev"]["local_dev_password"]
    check = run_deployer(["validate"], tmp_path / "local")
    assert check.returncode == 0, check.stderr
    shown = run_deployer(["config"], tmp_path / "local").stdout
    assert password not in shown and "local_dev_password: '***'" in shown and "login: local-dev" in shown


def test_local_dev_login_is_refused_on_remote_hosts(site) -> None:
    configs = base_configs()
    configs[SCOPE]["login"] = "local-dev"
    s = site(configs=configs, passwords={SCOPE: {"local_dev_password": "a-long-shared-password"}})
    result = run_cli(["-i", "prod", "-t", "designsafe", "validate"], s.path)
    assert result.exit_code == 2
    assert f"site.configs: {SCOPE}/login: local-dev is for a hub on this machine only, but hub1, worker1, worker2 is remote" in result.stderr


def test_destroy_on_remote_hosts_and_without_confirmation(site) -> None:
    s = site()
    for args in (["-i", "prod", "-t", "designsafe", "destroy", "-y"], ["-i", "prod", "-t", "designsafe", "-a", "destroy", "-y", "--purge-data"]):
        result = run_deployer(args, s.path)
        assert result.returncode == 1 and "error: hub1 (root@hub.example.org:22): cannot connect over SSH" in result.stderr, result.stderr
    asked = run_deployer(["-i", "prod", "-t", "designsafe", "-a", "destroy"], s.path)
    assert asked.returncode == 2 and "not on a terminal: pass -y to confirm" in asked.stderr
    wrong = run_deployer(["-i", "prod", "-t", "designsafe", "-a", "deploy", "-y"], s.path)
    assert wrong.returncode == 2 and "-y and --purge-data belong to -a destroy, not -a deploy" in wrong.stderr


def test_config_prints_yaml_that_reads_back_with_the_tenant_type_in_force(site) -> None:
    """A custom tenant's type is the default in force (agave), not null; an explicit enum prints; a PEM
    bundle prints as a block that reads back to the same text."""
    import yaml as pyyaml

    from conftest import make_cert

    ca = make_cert("Custom tenant CA")[0]
    configs = base_configs()
    configs[SCOPE].update({"tenant": "mytenant", "jupyterhub_tenant_base_url": "https://auth.example.org", "tenant_ca_bundle": "ca.pem"})
    s = site(configs=configs)
    s.write("extras/ca.pem", ca)
    shown = run_cli(["-i", "prod", "-t", "designsafe", "config"], s.path)
    assert shown.exit_code == 0, shown.output
    data = pyyaml.safe_load(shown.stdout)[SCOPE]
    assert data["tenant_type"] == "agave" and data["tenant_ca_bundle"] == ca
    assert "tenant_type: agave  # default (the tenant is not in the registry)" in shown.stdout
    configs[SCOPE]["tenant_type"] = "agave"
    explicit = run_cli(["-i", "prod", "-t", "designsafe", "config"], site(configs=configs).path)
    assert explicit.exit_code == 0 and "tenant_type: agave  # site.configs" in explicit.stdout, explicit.output
