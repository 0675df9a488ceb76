from __future__ import annotations

from deployer.config import overrides
from deployer.config.scopes import Origin, Target, merge, parse_scope, split_scoped_file


def test_parse_scope_keeps_dotted_tenant_ids() -> None:
    assert parse_scope("jupyterhub") == Target("jupyterhub")
    assert parse_scope("jupyterhub.prod") == Target("jupyterhub", "prod")
    assert parse_scope("jupyterhub.prod.tacc.prod") == Target("jupyterhub", "prod", "tacc.prod")
    assert parse_scope("not a scope") is None
    assert parse_scope("jupyterhub..prod") is None
    assert Target("jupyterhub", "prod", "sd2e").scopes() == ["jupyterhub", "jupyterhub.prod", "jupyterhub.prod.sd2e"]


def _file(data: dict, source: str):
    scoped, _ = split_scoped_file(data, source, {"jupyterhub"})
    assert not scoped.problems
    return scoped


def test_most_specific_scope_wins_key_by_key() -> None:
    configs = _file(
        {
            "jupyterhub": {"a": 1, "b": 1, "c": 1, "mounts": ["/x:/x:ro", "/y:/y:ro"]},
            "jupyterhub.prod": {"b": 2, "mounts": ["/z:/z:rw"]},
            "jupyterhub.prod.designsafe": {"c": 3},
            "jupyterhub.staging.designsafe": {"a": 99},
        },
        "site.configs",
    )
    layered = merge(Target("jupyterhub", "prod", "designsafe"), [configs])
    assert layered.values == {"a": 1, "b": 2, "c": 3, "mounts": ["/z:/z:rw"]}  # lists are replaced, not appended
    assert layered.origins["a"] == Origin("site.configs", "jupyterhub")
    assert layered.origins["b"] == Origin("site.configs", "jupyterhub.prod")
    assert layered.origins["c"] == Origin("site.configs", "jupyterhub.prod.designsafe")


def test_passwords_win_at_the_same_scope_but_not_over_a_more_specific_one() -> None:
    configs = _file({"jupyterhub.prod": {"k": "configs"}, "jupyterhub.prod.t": {"j": "configs-specific"}}, "site.configs")
    passwords = _file({"jupyterhub.prod": {"k": "passwords", "j": "passwords-general"}}, "site.passwords")
    layered = merge(Target("jupyterhub", "prod", "t"), [configs, passwords])
    assert layered.values == {"k": "passwords", "j": "configs-specific"}
    assert any("also set in site.configs" in str(w) for w in layered.warnings)


def test_overrides_win_over_everything_and_are_typed() -> None:
    configs = _file({"jupyterhub.prod.t": {"notebook_offer_lab": True, "jupyterhub_host": "a.org"}}, "site.configs")
    layered = merge(Target("jupyterhub", "prod", "t"), [configs])
    pairs, problems = overrides.parse("notebook_offer_lab=false&cull_idle_notebook_timeout=60&notebook_memory_limit=3G&jupyterhub_host=b.org&x=")
    assert not problems
    overrides.apply(layered, pairs)
    assert layered.values["notebook_offer_lab"] is False
    assert layered.values["cull_idle_notebook_timeout"] == 60
    assert layered.values["notebook_memory_limit"] == "3G"
    assert layered.values["jupyterhub_host"] == "b.org"
    assert layered.values["x"] == ""
    assert layered.origins["jupyterhub_host"] == overrides.ORIGIN


def test_override_values_may_contain_equals_signs() -> None:
    pairs, problems = overrides.parse("jupyterhub_oauth_client_id=abc=def")
    assert pairs == [("jupyterhub_oauth_client_id", "abc=def")] and not problems


def test_unknown_project_stanzas_are_ignored_with_a_warning() -> None:
    scoped, _ = split_scoped_file({"abaco.prod": {"x": 1}}, "site.configs", {"jupyterhub"})
    assert not scoped.problems and not scoped.stanzas
    assert "ignored: no project named 'abaco'" in str(scoped.warnings[0])


def test_servers_globals_are_separated() -> None:
    scoped, globals_ = split_scoped_file({"ssh_user": "ubuntu", "jupyterhub.prod": {"hosts": []}}, "site.hosts", {"jupyterhub"}, globals_allowed=("ssh_user",))
    assert globals_ == {"ssh_user": "ubuntu"} and "jupyterhub.prod" in scoped.stanzas
