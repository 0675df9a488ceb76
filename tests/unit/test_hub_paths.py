"""Untrusted names never become paths that escape their directory."""

from __future__ import annotations

import pytest

from deployer_hub import paths

HOSTILE = [
    "..", ".", "../evil", "a/b", "/etc", "a\x00b", "", " ", "a..b", "..a",
    "a\u2215b",  # DIVISION SLASH, looks like '/'
    "a\u2024\u2024b",  # ONE DOT LEADER x2, NFKC turns into '..'
    "x" * 200, "-rf", "name\nwith newline", "tab\tname", "semi;colon", "$(id)", "back\\slash", "émile",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_after_normalisation(name: str) -> None:
    with pytest.raises(paths.UnsafeName):
        paths.safe_component(paths.normalize(name))


@pytest.mark.parametrize("name", ["jdoe", "j.doe", "jdoe@tacc.utexas.edu", "user_1", "a-b+c", "0day"])
def test_ordinary_names_pass(name: str) -> None:
    assert paths.safe_component(name) == name


def test_normalize_folds_case_width_and_space() -> None:
    assert paths.normalize("  JDoe ") == "jdoe"
    assert paths.normalize("Ｊdoe") == "jdoe"  # fullwidth J
    assert paths.normalize("a\u2024\u2024b") == "a..b"


def test_join_under_refuses_escapes() -> None:
    assert paths.join_under("/tokens", "sim", "jdoe") == "/tokens/sim/jdoe"
    for parts in (("..", "x"), ("/etc",), ("a", "../../b")):
        with pytest.raises(paths.UnsafeName):
            paths.join_under("/tokens", *parts)


@pytest.mark.parametrize("check", [
    lambda: paths.safe_component("alice\n"),
    lambda: paths.canonical_username("alice\n"),
    lambda: paths.safe_relative_path("04/12345/JDoe\n", "TAS home directory"),
])
def test_a_trailing_newline_is_not_a_safe_name(check) -> None:
    # (a regex's '$' also matches before a final newline: the whole name must match)
    with pytest.raises(paths.UnsafeName):
        check()
