"""Property: random mutations of the example deployment (values replaced by anything YAML can hold,
keys deleted or added, in any of the three files) never crash Deployer (exit 70 or a traceback) and
never print a secret — neither the original ones nor a value the mutation put under a secret key."""

from __future__ import annotations

from typing import Any

import yaml
from conftest import SECRET_VALUES, base_configs, base_hosts, base_passwords, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.config.model import SECRET_KEYS, JupyterHubConfig

LEAVES = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(max_size=24) | st.sampled_from(["", "/", "//", "/{username}", "0", "true", "*", "!x", "a:b:c", "ｊｄｏｅ", "10.0.0.1",
                                                    "agave", "tapis", "oidc", "local-dev", "fd00::1", "3G",
                                                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]))
VALUES = st.recursive(LEAVES, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
                      max_leaves=8)
MUTATION = st.tuples(st.sampled_from(["configs", "passwords", "hosts"]), st.integers(0, 10_000),
                     st.sampled_from(["replace", "delete", "add"]), VALUES,
                     st.text(min_size=1, max_size=20) | st.sampled_from(sorted(JupyterHubConfig.model_fields)))


def _slots(data: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a nested structure of dicts and lists."""
    found: list[tuple[Any, Any]] = []
    stack = [data]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            found.append((node, key))
            stack.append(value)
    return found


def _mutate(files: dict[str, dict], mutation: tuple) -> None:
    which, index, how, value, new_key = mutation
    slots = _slots(files[which])
    if not slots:  # an earlier mutation emptied the file
        files[which] = value if isinstance(value, dict) else {new_key: value}
        return
    container, key = slots[index % len(slots)]
    if how == "delete":
        container.pop(key) if isinstance(container, dict) else container.pop(key)
    elif how == "add" and isinstance(container, dict):
        container[new_key] = value
    else:
        container[key] = value


#: Text any output may hold anyway (the deployment's own values): a "secret" found in it proves nothing.
_ORDINARY = yaml.safe_dump([base_configs(), base_hosts()])


def _secrets(files: dict[str, dict]) -> set[str]:
    """Every text under a secret key after the mutations (long and distinctive enough not to match by chance)."""
    found = set(SECRET_VALUES)
    for data in files.values():
        for container, key in _slots(data):
            value = container[key].strip() if key in SECRET_KEYS and isinstance(container[key], str) else ""
            if len(value) >= 6 and value not in _ORDINARY and value not in ("secret", "password"):
                found.add(value)
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_random_mutations_never_crash_and_never_print_a_secret(site, mutations: list) -> None:
    files = {"configs": base_configs(), "passwords": base_passwords(), "hosts": base_hosts()}
    for mutation in mutations:
        _mutate(files, mutation)
    s = site(configs=files["configs"], passwords=files["passwords"], hosts=files["hosts"])
    for args in (["-i", "prod", "-t", "designsafe", "validate"], ["-i", "prod", "-t", "designsafe", "config"]):
        result = run_cli(args, s.path)
        assert result.exit_code in (0, 2), f"exit {result.exit_code} for {mutations!r}:\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stdout + result.stderr
        for secret in _secrets(files):
            assert secret not in result.stdout + result.stderr, f"a secret was printed for {mutations!r}"
