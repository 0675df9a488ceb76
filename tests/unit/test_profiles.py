"""Server profiles: who may use which, the form, and the server-side check of every request."""

from __future__ import annotations

import pytest
from deployer_hub import profiles
from deployer_hub.profiles import ProfileRefused
from deployer_hub.settings import ProfileSettings

EVERYONE = ProfileSettings(name="Standard")
ALICE = ProfileSettings(name="Large", users=["alice"], memory_limit=2**31)
STAFF = ProfileSettings(name="Staff", groups=["staff"], image="img:staff")
ALL = [EVERYONE, ALICE, STAFF]


@pytest.mark.parametrize(("user", "groups", "expected"), [
    ("alice", [], ["Standard", "Large"]),
    ("bob", ["staff"], ["Standard", "Staff"]),
    ("bob", ["Staff", "staff members", " staff"], ["Standard"]),  # group names match exactly
    ("alice", ["staff"], ["Standard", "Large", "Staff"]),
    ("Alice", [], ["Standard"]),  # usernames too
])
def test_each_user_is_offered_their_profiles_in_the_operators_order(user: str, groups: list[str], expected: list[str]) -> None:
    assert [p.name for p in profiles.allowed(ALL, user, groups)] == expected


def test_the_first_allowed_profile_is_the_default() -> None:
    assert profiles.choose([ALICE, EVERYONE], {}, "bob", []) is EVERYONE
    assert profiles.choose([ALICE, EVERYONE], {}, "alice", []) is ALICE


@pytest.mark.parametrize(("options", "message"), [
    ({"profile": "Large"}, "You may not use the profile 'Large'"),
    ({"profile": "Nope"}, "There is no profile 'Nope'"),
    ({"profile": "standard"}, "There is no profile 'standard'"),  # names are exact
    ({"profile": ["Standard"]}, "must be one of the offered names"),
    ({"profile": None}, "must be one of the offered names"),
    ({"image": "evil:latest"}, "does not accept 'image'"),
    ({"profile": "Standard", "extra_container_spec": {"privileged": True}}, "does not accept 'extra_container_spec'"),
    ({"profile": "Standard", "mem_limit": "1T"}, "does not accept 'mem_limit'"),
])
def test_anything_but_an_allowed_profile_name_is_refused(options: dict, message: str) -> None:
    with pytest.raises(ProfileRefused, match=message):
        profiles.choose(ALL, options, "bob", [])


def test_a_user_without_any_profile_is_told_so() -> None:
    with pytest.raises(ProfileRefused, match="No server profile is available to you"):
        profiles.choose([ALICE, STAFF], {}, "bob", [])


@pytest.mark.parametrize(("form", "expected"), [
    ({"profile": ["Large"], "_xsrf": ["x"]}, {"profile": "Large"}),
    ({"_xsrf": ["x"]}, {}),
    ({}, {}),
])
def test_the_form_becomes_a_profile_name_only(form: dict, expected: dict) -> None:
    assert profiles.from_form(form) == expected


@pytest.mark.parametrize(("form", "message"), [
    ({"profile": ["Standard"], "image": ["evil"]}, "does not accept 'image'"),
    ({"profile": ["Standard", "Large"]}, "Choose exactly one profile"),
    ({"cpu_limit": ["64"]}, "does not accept 'cpu_limit'"),
])
def test_a_form_with_more_than_a_profile_is_refused(form: dict, message: str) -> None:
    with pytest.raises(ProfileRefused, match=message):
        profiles.from_form(form)


def test_no_form_for_one_profile_and_an_escaped_form_for_several() -> None:
    assert profiles.form([EVERYONE]) == "" and profiles.form([]) == ""
    hostile = ProfileSettings(name='<script>alert(1)</script>"', description="<b>big</b> & fast")
    html = profiles.form([EVERYONE, hostile], selected='<script>alert(1)</script>"')
    assert "<script>" not in html and "<b>" not in html
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;&quot;" checked' in html
    assert html.count(" checked") == 1


def test_the_form_preselects_the_kept_choice_only_when_it_is_still_offered() -> None:
    html = profiles.form([EVERYONE, ALICE], selected="Large")
    assert 'value="Large" checked' in html
    html = profiles.form([EVERYONE, ALICE], selected="Staff")
    assert 'value="Standard" checked' in html


@pytest.mark.parametrize(("claim", "expected"), [
    (["staff", "students"], {"staff", "students"}),
    (None, set()),
    ("staff", set()),  # not a list: no groups, never a substring match
    ({"staff": True}, set()),
    (["staff", 7, None, ["nested"], "", " padded ", "tab\there", "x" * 129], {"staff"}),
    (["g"] * 501, set()),  # more than anyone belongs to: a broken or hostile tenant
    (["/admins", "Design Safe"], {"/admins", "Design Safe"}),  # Keycloak paths, spaces: kept exactly as sent
])
def test_the_tenants_groups_are_kept_only_as_a_list_of_plain_names(claim, expected) -> None:
    import logging

    from deployer_hub import groups

    assert groups.from_claim(claim, logging.getLogger("test"), "groups") == expected
