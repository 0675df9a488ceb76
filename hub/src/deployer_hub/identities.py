"""Who each hub username belongs to, and the POSIX identity TAS last gave them.

A small SQLite file beside the hub's database (standard library only):

* ``accounts``: hub name -> (issuer, subject), both unique. An OpenID Connect account is its
  issuer + ``sub``; an Agave or Tapis account is its tenant + the tenant's username. A login
  whose username is already bound to another subject is refused, never merged; a subject
  whose username claim changed keeps its hub account.
* ``posix``: hub name -> uid, gid, home directory from the last successful TAS lookup, so token
  files can be written on every refresh (also after a hub restart) without asking TAS on the
  page path.
* ``user_ids``: without TAS, with ``notebook_uid_range``: hub name -> the user's own uid (and gid of
  the same number), given once and kept (in backups too, as this file is), so no file or token of one
  user is ever owned by another's uid; and whether their directories were re-owned to it (once, when
  the deployment switched from one shared uid).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    hub_name TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    bound_at REAL NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE TABLE IF NOT EXISTS user_ids (
    hub_name TEXT PRIMARY KEY,
    uid INTEGER NOT NULL UNIQUE,
    reowned INTEGER NOT NULL DEFAULT 0,
    given_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS posix (
    hub_name TEXT PRIMARY KEY,
    uid INTEGER,
    gid INTEGER,
    home TEXT,
    looked_up_at REAL NOT NULL
);
"""


class NoIdLeft(Exception):
    """Every id of the range is some user's."""


class AccountConflict(Exception):
    """The hub name is bound to another subject (or the subject to another name)."""


@dataclass(frozen=True)
class Posix:
    uid: int | None
    gid: int | None
    home_directory: str | None


class IdentityStore:
    """One SQLite file; every call is a short local transaction (safe on the hub's event loop)."""

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._posix: dict[str, Posix] = {}
        self._ids: dict[str, tuple[int, bool]] = {}

    def close(self) -> None:
        self._db.close()

    # --- accounts

    def name_for(self, issuer: str, subject: str) -> str | None:
        row = self._db.execute("SELECT hub_name FROM accounts WHERE issuer = ? AND subject = ?", (issuer, subject)).fetchone()
        return row[0] if row else None

    def bind(self, hub_name: str, issuer: str, subject: str) -> None:
        """Bind ``hub_name`` to (issuer, subject), or raise :class:`AccountConflict`."""
        with self._db:  # one transaction: check and insert together
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT issuer, subject FROM accounts WHERE hub_name = ?", (hub_name,)).fetchone()
            if row is not None:
                if tuple(row) != (issuer, subject):
                    raise AccountConflict(f"hub user {hub_name!r} belongs to subject {row[1]!r} of {row[0]!r}, not {subject!r} of {issuer!r}")
                return
            other = self.name_for(issuer, subject)
            if other is not None:
                raise AccountConflict(f"subject {subject!r} of {issuer!r} is hub user {other!r}, not {hub_name!r}")
            self._db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", (hub_name, issuer, subject, time.time()))

    # --- each user's own id (without TAS)

    def user_id(self, hub_name: str, first: int, last: int) -> tuple[int, bool]:
        """(the user's own uid, whether their directories were re-owned to it): given the first time, the id after the
        highest given in first..last (an id is never given twice: files of a user who left may still carry it), then
        kept, also when the range changes later. Raises NoIdLeft."""
        found = self._ids.get(hub_name)
        if found is not None:
            return found
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # one transaction: no two users get one id
            row = self._db.execute("SELECT uid, reowned FROM user_ids WHERE hub_name = ?", (hub_name,)).fetchone()
            if row is None:
                (highest,) = self._db.execute("SELECT MAX(uid) FROM user_ids WHERE uid BETWEEN ? AND ?", (first, last)).fetchone()
                free = first if highest is None else highest + 1
                if free > last:
                    raise NoIdLeft(f"every id of {first}-{last} is given")
                self._db.execute("INSERT INTO user_ids VALUES (?, ?, 0, ?)", (hub_name, free, time.time()))
                row = (free, 0)
        self._ids[hub_name] = (int(row[0]), bool(row[1]))
        return self._ids[hub_name]

    def reowned(self, hub_name: str) -> None:
        """The user's directories now belong to their own id: never re-owned again."""
        self._db.execute("UPDATE user_ids SET reowned = 1 WHERE hub_name = ?", (hub_name,))
        if hub_name in self._ids:
            self._ids[hub_name] = (self._ids[hub_name][0], True)

    # --- POSIX identity (cached in memory: read on every refresh)

    def posix(self, hub_name: str) -> Posix | None:
        if hub_name not in self._posix:
            row = self._db.execute("SELECT uid, gid, home FROM posix WHERE hub_name = ?", (hub_name,)).fetchone()
            if row is None:
                return None
            self._posix[hub_name] = Posix(*row)
        return self._posix[hub_name]

    def set_posix(self, hub_name: str, identity: Posix) -> None:
        if self._posix.get(hub_name) == identity:
            return
        self._db.execute(
            "INSERT INTO posix VALUES (?, ?, ?, ?, ?) ON CONFLICT(hub_name) DO UPDATE SET uid = excluded.uid, "
            "gid = excluded.gid, home = excluded.home, looked_up_at = excluded.looked_up_at",
            (hub_name, identity.uid, identity.gid, identity.home_directory, time.time()),
        )
        self._posix[hub_name] = identity
