from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config.discovery import discover
from deployer.errors import ConfigError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_first_file_of_each_extension_alphabetically(tmp_path: Path) -> None:
    for name in ("b.configs", "a.configs", "site.hosts", "site.passwords"):
        touch(tmp_path / name)
    (tmp_path / "extras").mkdir()
    files = discover(tmp_path)
    assert files.configs == tmp_path / "a.configs"
    assert files.servers == tmp_path / "site.hosts"
    assert files.passwords == tmp_path / "site.passwords"
    assert files.extras == tmp_path / "extras"
    assert files.deployment is None
    # Two candidates: the operator is told which one was taken and how to choose.
    assert len(files.warnings) == 1
    assert "a.configs: using this configs file; also found b.configs" in str(files.warnings[0])
    assert "-c" in str(files.warnings[0])


def test_deployment_yml_wins_over_extensions_and_flags_win_over_it(tmp_path: Path) -> None:
    touch(tmp_path / "a.configs")
    touch(tmp_path / "conf" / "chosen.configs")
    touch(tmp_path / "flag.configs")
    touch(tmp_path / "deployment.yml", "configs: conf/chosen.configs\nproject: jupyterhub\ninstance: prod\ntenant: sd2e\n")
    files = discover(tmp_path)
    assert files.configs == tmp_path / "conf" / "chosen.configs"
    assert files.defaults == {"project": "jupyterhub", "instance": "prod", "tenant": "sd2e"}
    assert discover(tmp_path, configs="flag.configs").configs == tmp_path / "flag.configs"


def test_dash_d_names_another_deployment_file_relative_to_itself(tmp_path: Path) -> None:
    touch(tmp_path / "envs" / "staging.yml", "servers: staging.hosts\n")
    files = discover(tmp_path, deployment="envs/staging.yml")
    assert files.deployment == tmp_path / "envs" / "staging.yml"
    assert files.servers == tmp_path / "envs" / "staging.hosts"


def test_missing_dash_d_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        discover(tmp_path, deployment="nope.yml")
    assert str(info.value.problems[0]) == "nope.yml: deployment file not found (given with -d)"


def test_nothing_found_leaves_files_unset(tmp_path: Path) -> None:
    files = discover(tmp_path)
    assert (files.servers, files.configs, files.passwords, files.extras) == (None, None, None, None)


def test_deployment_yml_values_must_be_strings(tmp_path: Path) -> None:
    touch(tmp_path / "deployment.yml", "configs: [a, b]\n")
    with pytest.raises(ConfigError) as info:
        discover(tmp_path)
    assert str(info.value.problems[0]) == "deployment.yml: configs: must be a non-empty string"
