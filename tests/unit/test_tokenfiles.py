"""Token files: atomic replacement (no reader ever sees half a file), modes, names."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from deployer_hub import paths, tokenfiles
from deployer_hub.tenants import Flavour


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    directory = tokenfiles.user_dir(str(tmp_path), "sim", "jdoe")
    big = "x" * 200_000  # large enough that a non-atomic write would be observed half-done
    stop = threading.Event()
    seen: list[int] = []
    errors: list[Exception] = []

    def reader() -> None:
        target = Path(directory) / "current"
        while not stop.is_set():
            try:
                seen.append(json.loads(target.read_text())["n"])
            except FileNotFoundError:
                continue
            except Exception as exc:  # a torn read would fail to parse
                errors.append(exc)

    tokenfiles.write(directory, {"current": json.dumps({"n": -1, "pad": big}).encode()}, os.getuid(), os.getgid())
    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(200):
        tokenfiles.write(directory, {"current": json.dumps({"n": n, "pad": big}).encode()}, os.getuid(), os.getgid())
    stop.set()
    thread.join()
    assert not errors
    assert len(seen) > 10 and seen == sorted(seen)
    assert sorted(os.listdir(directory)) == ["current"]


def test_modes_and_directory_layout(tmp_path: Path) -> None:
    state = {"access_token": "A", "refresh_token": "R", "expires_at": 2_000_000_000, "issued_at": 1_999_985_600}
    directory = tokenfiles.user_dir(str(tmp_path), "designsafe", "jdoe")
    tokenfiles.write(directory, tokenfiles.render(Flavour.AGAVE, "designsafe", "https://agave.designsafe-ci.org", "jdoe", state), os.getuid(), os.getgid())
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(directory)).st_mode) == 0o711
    agpy = json.loads(Path(directory, ".agpy").read_text())
    assert agpy[0]["token"] == "A" and agpy[0]["expires_in"] == 14400 and agpy[0]["verify"] is True
    current = json.loads(Path(directory, "current").read_text())
    assert current["expires_at"] == "Wed May 18 03:33:20 UTC 2033" and current["created_at"] == "1999985600"


def test_shared_client_secret_only_when_asked() -> None:
    state = {"access_token": "A", "refresh_token": "R"}
    plain = tokenfiles.render(Flavour.TAPIS, "tacc", "https://tacc.tapis.io", "jdoe", state)
    shared = tokenfiles.render(Flavour.TAPIS, "tacc", "https://tacc.tapis.io", "jdoe", state, ("cid", "ckey"))
    assert json.loads(plain["tapis.json"])["client_key"] == ""
    assert json.loads(shared["tapis.json"])["client_key"] == "ckey"


@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_user_dir_refuses_hostile_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(paths.UnsafeName):
        tokenfiles.user_dir(str(tmp_path), "sim", name)
