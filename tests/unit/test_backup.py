"""The backup archive: what it holds, its encryption, and what restore accepts from it."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from deployer.config.hubsettings import Layout
from deployer.hosts.backup import MAGIC, Backup, BackupError, pack, restore_commands, unpack, write_private

SECRET = "S3CR3T-client-xyzzy"


def sample() -> Backup:
    return Backup("jupyterhub.prod.x", {"state/cookie_secret": b"c" * 64, "state/tls/key.pem": b"-----BEGIN PRIVATE KEY-----\n",
                                        "data/jupyterhub.sqlite": b"SQLite format 3\x00" + b"\x01" * 100},
                  {"jupyterhub_oauth_client_secret": SECRET}, "2026-11-30T01:00:00Z")


def test_an_archive_reads_back_whole_and_an_encrypted_one_only_with_its_passphrase() -> None:
    plain = pack(sample(), None)
    assert unpack(plain, None, "b") == Backup(**{**sample().__dict__, "version": unpack(plain, None, "b").version})
    encrypted = pack(sample(), "correct horse")
    assert encrypted.startswith(MAGIC) and SECRET.encode() not in encrypted and b"c" * 64 not in encrypted
    assert unpack(encrypted, "correct horse", "b").files == sample().files
    with pytest.raises(BackupError, match="b: wrong passphrase, or the file is damaged"):
        unpack(encrypted, "wrong", "b")
    with pytest.raises(BackupError, match="b is encrypted: give its passphrase"):
        unpack(encrypted, None, "b")
    with pytest.raises(BackupError, match="not a Deployer backup"):
        unpack(b"junk", None, "b")


def test_an_archive_with_other_files_is_refused_before_anything_is_written() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {"manifest.json": b'{"deployment": "x"}', "secrets.json": b"{}", "../../etc/cron.d/evil": b"* * * * * root sh"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(BackupError, match=r"holds files a Deployer backup does not: \.\./\.\./etc/cron\.d/evil"):
        unpack(buffer.getvalue(), None, "evil.backup")


def test_restore_writes_the_files_only_where_it_chooses_values_on_stdin() -> None:
    layout = Layout("jupyterhub-prod-x")
    commands = restore_commands(sample(), layout)
    assert commands[0].why == "stop the hub (its database is replaced)"
    written = {c.argv[-1]: c for c in commands[1:]}  # file name -> its command
    assert set(written) == {"cookie_secret", "tls/key.pem", "jupyterhub.sqlite"}
    assert written["cookie_secret"].argv[-2] == "/srv/deployer/jupyterhub-prod-x/state"
    assert written["jupyterhub.sqlite"].argv[-2] == "/srv/deployer/jupyterhub-prod-x/hub-data"
    assert all(SECRET not in " ".join(c.argv) and "c" * 64 not in " ".join(c.argv) for c in commands)


def test_the_archive_file_is_private_from_the_start_and_never_overwritten_by_accident(tmp_path) -> None:
    path = tmp_path / "x.backup"
    write_private(str(path), b"data")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(BackupError, match="exists: choose another file"):
        write_private(str(path), b"other")
    write_private(str(path), b"other", force=True)
    assert path.read_bytes() == b"other"
    link = tmp_path / "link.backup"
    link.symlink_to(tmp_path / "victim")
    with pytest.raises(BackupError):
        write_private(str(link), b"x", force=True)
    assert not (tmp_path / "victim").exists()
