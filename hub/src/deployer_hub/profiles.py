"""Server profiles (``notebook_profiles``): who may use which, the spawn page's form, and the check of
what a user asks for.

A user can only ever get a profile the operator offered to them: the form lists those, and every
start checks the request again on the server (a forged POST, an API call, or a choice kept in the
database from before the user left a group), so no image, mount or resource reaches the spawner
from the user (dockerspawner's CVE-2023-48311 was a user naming their own image). The user's choice
is one profile name and nothing else. Standard library only.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping, Sequence

from .settings import ProfileSettings

#: The one key a spawn request may carry (form field and user_options key).
FIELD = "profile"
#: Form fields JupyterHub itself adds to every form post.
_HUB_FIELDS = frozenset({"_xsrf"})


class ProfileRefused(Exception):
    """What the user asked for is not theirs to ask; the message is safe to show them."""


def may_use(profile: ProfileSettings, username: str, groups: Collection[str]) -> bool:
    if not profile.users and not profile.groups:
        return True
    return username in profile.users or any(group in profile.groups for group in groups)


def allowed(profiles: Sequence[ProfileSettings], username: str, groups: Collection[str]) -> list[ProfileSettings]:
    """The profiles this user may use, in the operator's order (the first is the default)."""
    return [p for p in profiles if may_use(p, username, groups)]


def from_form(formdata: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The spawn form's fields as user_options: the profile's name, and a refusal for anything else."""
    extra = sorted(k for k in formdata if k != FIELD and k not in _HUB_FIELDS)
    if extra:
        raise ProfileRefused(f"This hub does not accept {', '.join(repr(k[:40]) for k in extra[:3])} in a server request: "
                             "choose one of the offered profiles.")
    values = list(formdata.get(FIELD) or [])
    if len(values) > 1:
        raise ProfileRefused("Choose exactly one profile.")
    return {FIELD: values[0]} if values else {}


def choose(profiles: Sequence[ProfileSettings], options: Mapping[str, object], username: str, groups: Collection[str]) -> ProfileSettings:
    """The profile a start uses: the requested one if this user may use it, the first allowed if none
    was requested; anything else is refused."""
    mine = allowed(profiles, username, groups)
    extra = sorted(str(k) for k in options if k != FIELD)
    if extra:
        raise ProfileRefused(f"This hub does not accept {', '.join(repr(k[:40]) for k in extra[:3])} in a server request: "
                             "choose one of the offered profiles.")
    if not mine:
        raise ProfileRefused("No server profile is available to you on this hub. Please contact support.")
    if FIELD not in options:
        return mine[0]
    name = options[FIELD]
    if not isinstance(name, str):
        raise ProfileRefused("The profile must be one of the offered names.")
    for profile in mine:
        if profile.name == name:
            return profile
    if any(p.name == name for p in profiles):
        raise ProfileRefused(f"You may not use the profile {name[:80]!r}: choose one of the profiles offered to you.")
    raise ProfileRefused(f"There is no profile {name[:80]!r} on this hub: choose one of the offered profiles.")


def form(mine: Sequence[ProfileSettings], selected: str | None = None) -> str:
    """The spawn page's choice: one radio button per profile the user may use ('' for one or none: no form)."""
    if len(mine) <= 1:
        return ""
    chosen = selected if any(p.name == selected for p in mine) else mine[0].name
    rows = []
    for index, profile in enumerate(mine):
        checked = " checked" if profile.name == chosen else ""
        description = f'<div class="text-muted small">{html.escape(profile.description)}</div>' if profile.description else ""
        rows.append(
            f'<div class="form-check deployer-profile">'
            f'<input class="form-check-input" type="radio" name="{FIELD}" id="profile-{index}" value="{html.escape(profile.name, quote=True)}"{checked}>'
            f'<label class="form-check-label" for="profile-{index}"><strong>{html.escape(profile.name)}</strong>{description}</label></div>'
        )
    return '<fieldset><legend>Choose a server profile</legend>' + "".join(rows) + "</fieldset>"
