"""project_mounts: membership, directory names, and a projects API that may be broken or hostile."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from deployer_hub import mounts, paths
from deployer_hub.projects import (
    MAX_NAME,
    MAX_PROJECTS,
    Project,
    ProjectsError,
    check_project,
    dir_name,
    dir_names,
    project_mounts,
    user_projects,
)
from deployer_hub.settings import ProjectMountSettings, StaticProject

HOST = "/corral/projects/{project_id}"
TARGET = "/home/jupyter/projects"
API = "https://tenant.example.org/projects/v2/mine"
TOKEN = "S3CR3T-access-token"

STATIC = [
    StaticProject("PRJ-1", "Hurricane Harvey field data", users=["jdoe"]),
    StaticProject("PRJ-2", "Shake table", groups=["nheri"]),
    StaticProject("PRJ-3", "Someone else's", users=["alice"], groups=["other"]),
    StaticProject("PRJ-0", "Both", users=["jdoe"], groups=["nheri"]),
]


def settings(**kw: Any) -> ProjectMountSettings:
    return ProjectMountSettings(**{"host_path": HOST, "container_path": TARGET, "mode": "rw", **kw})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def api(reply: Any) -> Any:
    """A fetch that answers ``reply`` (raised when it is an exception), recording the URLs asked."""
    asked: list[str] = []

    async def fetch(url: str) -> Any:
        asked.append(url)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    fetch.asked = asked  # type: ignore[attr-defined]
    return fetch


def from_api(reply: Any, **kw: Any) -> list[Project]:
    return run(user_projects(settings(api_url=API), username="jdoe", groups=[], fetch=api(reply), **kw))


# --- static membership ----------------------------------------------------------------------


def test_static_membership_by_user_and_by_group_sorted_by_id() -> None:
    mine = run(user_projects(settings(projects=STATIC), username="jdoe", groups=["nheri"], fetch=None))
    assert [p.id for p in mine] == ["PRJ-0", "PRJ-1", "PRJ-2"]
    assert run(user_projects(settings(projects=STATIC), username="jdoe", groups=[], fetch=None)) == [
        Project("PRJ-0", "Both"), Project("PRJ-1", "Hurricane Harvey field data")]
    assert [p.id for p in run(user_projects(settings(projects=STATIC), username="bob", groups=["nheri", "x"], fetch=None))] == ["PRJ-0", "PRJ-2"]
    assert run(user_projects(settings(projects=STATIC), username="bob", groups=[], fetch=None)) == []


def test_static_membership_is_exact() -> None:
    """No case folding or prefix matching: JDoe is not jdoe, group NHERI is not nheri."""
    assert run(user_projects(settings(projects=STATIC), username="JDoe", groups=["NHERI", "nher"], fetch=None)) == []


def test_static_entry_with_unsafe_id_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    bad = [StaticProject("../etc", "x", users=["jdoe"]), StaticProject("PRJ-9", "ok", users=["jdoe"])]
    with caplog.at_level(logging.WARNING, "deployer_hub.projects"):
        assert [p.id for p in run(user_projects(settings(projects=bad), username="jdoe", groups=[], fetch=None))] == ["PRJ-9"]
    assert "skipped" in caplog.text


def test_static_projects_need_no_fetch_but_the_api_does() -> None:
    with pytest.raises(ProjectsError, match="log in again"):
        run(user_projects(settings(api_url=API), username="jdoe", groups=[], fetch=None))


# --- the API --------------------------------------------------------------------------------


def test_api_contract() -> None:
    fetch = api({"projects": [{"id": "PRJ-2", "name": "B"}, {"id": "PRJ-1", "name": "A", "extra": 1}], "status": "success"})
    mine = run(user_projects(settings(api_url=API), username="jdoe", groups=[], fetch=fetch))
    assert mine == [Project("PRJ-1", "A"), Project("PRJ-2", "B")]
    assert fetch.asked == [API]  # type: ignore[attr-defined]


def test_api_and_static_together_are_one_list_each_id_once() -> None:
    fetch = api({"projects": [{"id": "PRJ-1", "name": "from the API"}, {"id": "PRJ-7", "name": "G"}]})
    mine = run(user_projects(settings(api_url=API, projects=STATIC), username="jdoe", groups=[], fetch=fetch))
    assert [(p.id, p.name) for p in mine] == [("PRJ-0", "Both"), ("PRJ-1", "Hurricane Harvey field data"), ("PRJ-7", "G")]


@pytest.mark.parametrize("reply", [
    None, [], "projects", 42, {"projects": None}, {"projects": {"id": "PRJ-1", "name": "x"}}, {"project": []},
    {"projects": "PRJ-1"}, {"result": [{"id": "PRJ-1", "name": "x"}]},
])
def test_replies_not_in_the_contract_are_refused(reply: Any) -> None:
    with pytest.raises(ProjectsError, match="does not understand") as refused:
        from_api(reply)
    assert "PRJ-1" not in str(refused.value)


def test_too_many_projects_is_refused_not_truncated() -> None:
    entries = [{"id": f"PRJ-{i}", "name": f"p{i}"} for i in range(MAX_PROJECTS + 1)]
    with pytest.raises(ProjectsError, match=f"{MAX_PROJECTS + 1} projects"):
        from_api({"projects": entries})
    assert len(from_api({"projects": entries[:MAX_PROJECTS]})) == MAX_PROJECTS


@pytest.mark.parametrize("entry", [
    {"id": "../x", "name": "up"}, {"id": "a/b", "name": "slash"}, {"id": "..", "name": "dots"}, {"id": ".", "name": "dot"},
    {"id": "a..b", "name": "dots inside"}, {"id": "/etc", "name": "abs"}, {"id": "", "name": "empty"}, {"id": "-rf", "name": "dash"},
    {"id": "PRJ-1\n", "name": "newline"}, {"id": "PRJ\x00", "name": "nul"}, {"id": "PRJ 1", "name": "space"}, {"id": "ПРЖ-1", "name": "cyrillic"}, {"id": "a\u2215b", "name": "slash-like"},
    {"id": "x" * 129, "name": "long id"}, {"id": 1234, "name": "int id"}, {"id": None, "name": "null id"}, {"id": ["PRJ-1"], "name": "list id"},
    {"id": True, "name": "bool id"}, {"name": "no id"}, {"id": "PRJ-5"}, {"id": "PRJ-5", "name": 5}, {"id": "PRJ-5", "name": None},
    {"id": "PRJ-5", "name": {"en": "x"}}, {"id": "PRJ-5", "name": "n" * (MAX_NAME + 1)},
    "PRJ-5", 5, None, ["PRJ-5", "name"],
])
def test_bad_entries_are_skipped_with_a_log_line_and_the_rest_kept(entry: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "deployer_hub.projects"):
        mine = from_api({"projects": [entry, {"id": "PRJ-1", "name": "good"}]})
    assert mine == [Project("PRJ-1", "good")]
    assert "entry 0 of the reply skipped" in caplog.text
    assert "n" * (MAX_NAME + 1) not in caplog.text  # a huge hostile value is not copied into the log


def test_ids_keep_their_case_and_duplicates_keep_the_first() -> None:
    mine = from_api({"projects": [{"id": "prj-1", "name": "lower"}, {"id": "PRJ-1", "name": "upper"}, {"id": "PRJ-1", "name": "again"}]})
    assert mine == [Project("PRJ-1", "upper"), Project("prj-1", "lower")]


class _StatusError(Exception):
    def __init__(self, code: int):
        super().__init__(f"HTTP {code}: body with {TOKEN}")
        self.code = code


class _Response:
    def __init__(self, status_code: int):
        self.status_code = status_code


class _HttpxLikeError(Exception):
    def __init__(self, status_code: int):
        super().__init__("Server error for url ...")
        self.response = _Response(status_code)


class ReadTimeout(Exception):
    pass


@pytest.mark.parametrize("error, message", [
    (_StatusError(401), "refused your login \\(HTTP 401\\)"),
    (_HttpxLikeError(403), "refused your login \\(HTTP 403\\)"),
    (_StatusError(500), "error \\(HTTP 500\\)"),
    (_HttpxLikeError(502), "error \\(HTTP 502\\)"),
    (_StatusError(599), "could not be reached"),  # tornado: no answer
    (ConnectionRefusedError("refused"), "could not be reached"),
    (ReadTimeout("read timed out"), "did not answer in time"),
    (json.JSONDecodeError("Expecting value", "<html>" + TOKEN, 0), "not JSON"),
    (TimeoutError(), "did not answer"),
    (ProjectsError("the caller's own message"), "the caller's own message"),
])
def test_failures_of_the_request_are_projects_errors_with_safe_messages(error: Exception, message: str) -> None:
    with pytest.raises(ProjectsError, match=message) as refused:
        from_api(error)
    assert TOKEN not in str(refused.value) and "<html>" not in str(refused.value)


def test_a_slow_api_times_out() -> None:
    async def fetch(url: str) -> Any:
        await asyncio.sleep(5)

    with pytest.raises(ProjectsError, match="within 0.1 seconds"):
        run(user_projects(settings(api_url=API), username="jdoe", groups=[], fetch=fetch, timeout=0.1))


def test_check_project() -> None:
    assert check_project("PRJ-1234", "Name") == Project("PRJ-1234", "Name")
    for bad_id in ("../x", "a/b", "..", "", 1):
        with pytest.raises(ProjectsError):
            check_project(bad_id, "x")


# --- directory names ------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("Hurricane Harvey field data", "hurricane-harvey-field-data"),
    ("  --Shake..Table__  ", "shake..table"),
    ("../../etc/passwd", "etc-passwd"),
    ("a/b\\c", "a-b-c"),
    ("Données sismiques", "donn-es-sismiques"),
    ("\u212a\u212a", ""),  # Kelvin signs: not folded to k
    ("!!!", ""),
    ("...", ""),
    ("日本語", ""),
    ("x" * 100, "x" * 64),
    ("a" * 63 + " b", "a" * 63),  # cut, then trimmed again
    ("Ünïcödé Ñame", "n-c-d-ame"),
    ("tab\there\nnewline\x00nul", "tab-here-newline-nul"),
])
def test_dir_name_follows_the_username_rules(name: str, expected: str) -> None:
    assert dir_name(name) == expected


def test_empty_names_fall_back_to_the_id_and_collisions_get_the_id() -> None:
    projects = [Project("PRJ-3", "Data"), Project("PRJ-1", "data"), Project("PRJ-2", "DATA!"), Project("PRJ@4+X", "!!!"),
                Project("PRJ-5", "日本語"), Project("PRJ-6", "data-prj-2")]
    assert dir_names(projects) == {
        "PRJ-1": "data", "PRJ-2": "data-prj-2", "PRJ-3": "data-prj-3", "PRJ@4+X": "prj-4-x", "PRJ-5": "prj-5",
        "PRJ-6": "data-prj-2-prj-6",
    }
    assert dir_names(reversed(projects)) == dir_names(projects)  # the order of the reply does not matter


def test_ids_differing_only_by_case_get_distinct_directories() -> None:
    names = dir_names([Project("PRJ-1", "x"), Project("prj-1", "x"), Project("Prj-1", "x")])
    assert len(set(names.values())) == 3 and names["PRJ-1"] == "x"


# --- mounts ---------------------------------------------------------------------------------


def test_project_mounts() -> None:
    rendered = project_mounts(settings(mode="ro"), [Project("PRJ-2", "Shake table"), Project("PRJ-1", "Hurricane Harvey")])
    assert [(m.source, m.target, m.read_only) for m in rendered] == [
        ("/corral/projects/PRJ-1", "/home/jupyter/projects/hurricane-harvey", True),
        ("/corral/projects/PRJ-2", "/home/jupyter/projects/shake-table", True),
    ]
    assert not project_mounts(settings(), [Project("PRJ-1", "x")])[0].read_only
    assert project_mounts(settings(), []) == []


def test_project_mounts_with_tenant_id() -> None:
    rendered = project_mounts(settings(host_path="/corral/{tenant_id}/projects/{project_id}/"), [Project("PRJ-1", "x")], tenant_id="designsafe")
    assert rendered[0].source == "/corral/designsafe/projects/PRJ-1"
    with pytest.raises(mounts.MountRenderError, match="tenant_id"):
        project_mounts(settings(host_path="/corral/{tenant_id}/{project_id}"), [Project("PRJ-1", "x")])
    with pytest.raises(paths.UnsafeName):
        project_mounts(settings(host_path="/corral/{tenant_id}/{project_id}"), [Project("PRJ-1", "x")], tenant_id="../x")


@pytest.mark.parametrize("project_id", ["..", "../etc", "a/../../b", "a/b", ".", ""])
def test_a_hostile_project_never_escapes_the_host_path(project_id: str) -> None:
    """Even a Project built around the checks of user_projects is refused at rendering."""
    with pytest.raises((mounts.MountRenderError, paths.UnsafeName)):
        project_mounts(settings(), [Project(project_id, "x")])


def test_host_path_escape_check_is_the_one_of_volume_mounts() -> None:
    """The rendered path must stay below the template's static part, whatever the value."""
    with pytest.raises(mounts.MountRenderError, match="escapes"):
        mounts._render("/corral/projects/{project_id}", {"project_id": "../../etc"})
    assert mounts._render("/corral/prj-{project_id}/data", {"project_id": "X1"}) == "/corral/prj-X1/data"


def test_targets_never_leave_the_container_path() -> None:
    hostile = [Project(f"P{i}", name) for i, name in enumerate(["..", ".", "../..", "/", "", "-", "._-", "..\x00..", "~", "*"])]
    rendered = project_mounts(settings(), hostile)
    targets = [m.target for m in rendered]
    assert len(set(targets)) == len(hostile)
    for target in targets:
        parent, _, leaf = target.rpartition("/")
        assert parent == TARGET and leaf not in ("", ".", "..")


@pytest.mark.parametrize("kw", [
    {"host_path": "/corral/projects"}, {"host_path": "/corral/{username}/{project_id}"}, {"host_path": "relative/{project_id}"},
    {"container_path": "/home/{username}/projects"}, {"container_path": "relative"}, {"container_path": "/"},
    {"container_path": "/home/../etc"}, {"mode": "rwx"},
])
def test_bad_settings_are_mount_errors(kw: dict[str, str]) -> None:
    with pytest.raises(mounts.MountError):
        project_mounts(settings(**kw), [Project("PRJ-1", "x")])


# --- the validation helper for the CLI ------------------------------------------------------


@pytest.mark.parametrize("path, normal", [
    ("/corral/projects/{project_id}", "/corral/projects/{project_id}"),
    ("/corral//{tenant_id}/./{project_id}/", "/corral/{tenant_id}/{project_id}"),
    ("/corral/prj-{project_id}/data", "/corral/prj-{project_id}/data"),
])
def test_check_project_host_path_accepts(path: str, normal: str) -> None:
    assert mounts.check_project_host_path(path) == normal


@pytest.mark.parametrize("path, message", [
    ("/corral/projects", "must contain \\{project_id\\}"),
    ("/corral/{{project_id}}", "must contain \\{project_id\\}"),  # literal braces, not a variable
    ("/corral/{tenant_id}", "must contain"),
    ("/corral/{username}/{project_id}", "unknown template variable \\{username\\}"),
    ("/corral/{tas_homeDirectory}/{project_id}", "unknown template variable"),
    ("/corral/{project_id!r}", "format spec or conversion"),
    ("/corral/{project_id:>9}", "format spec or conversion"),
    ("/corral/{project_id", "malformed"),
    ("/corral/{}", "unknown template variable"),
    ("/{project_id}", "directly below /"),
    ("corral/{project_id}", "absolute"),
    ("/corral/../{project_id}", "'..'"),
    ("/corral/\n{project_id}", "control character"),
    ("", "empty"),
])
def test_check_project_host_path_refuses(path: str, message: str) -> None:
    with pytest.raises(mounts.MountError, match=message):
        mounts.check_project_host_path(path)


def test_project_id_stays_unknown_to_volume_mounts() -> None:
    with pytest.raises(mounts.MountError, match="unknown template variable"):
        mounts.parse("/corral/projects/{project_id}:/home/jupyter/p:rw")
