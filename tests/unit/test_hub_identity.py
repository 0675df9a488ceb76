"""The pure parts of the hub's identity handling: canonical usernames, token lifetimes recorded once,
the identity store, single-flight refreshes, ID-token checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from deployer_hub import identities, oidc, paths, tokenlife
from deployer_hub.singleflight import SingleFlight

# --- usernames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["Alice", "ALICE", " alice", "alice ", "ａｌｉｃｅ", "\u212aate", "ﬁle", "Ａlice"])
def test_names_a_normaliser_would_change_are_not_canonical(raw: str) -> None:
    with pytest.raises(paths.NotCanonical):
        paths.canonical_username(raw)


@pytest.mark.parametrize("raw", ["ａｌｉｃｅ", " alice", "\u212aate", "ﬁle"])
def test_case_insensitive_tenants_fold_ascii_case_only(raw: str) -> None:
    assert paths.canonical_username("Alice", case_insensitive=True) == "alice"
    with pytest.raises(paths.NotCanonical):
        paths.canonical_username(raw, case_insensitive=True)


@pytest.mark.parametrize("raw", ["../evil", "a/b", "", "émile", "x" * 200, None, 42])
def test_unsafe_names_are_unsafe(raw) -> None:
    with pytest.raises(paths.UnsafeName):
        paths.canonical_username(raw)


def test_canonical_names_pass_unchanged() -> None:
    for name in ("jdoe", "j.doe@tacc.utexas.edu", "user_1"):
        assert paths.canonical_username(name) == name


def test_tas_home_directories_keep_their_case() -> None:
    assert paths.safe_relative_path("/04/12345/JDoe/", "home") == "04/12345/JDoe"
    for bad in ("04/../etc", "04/12345/J Doe", "", "/", ["x"], "a/\u2215b"):
        with pytest.raises(paths.UnsafeName):
            paths.safe_relative_path(bad, "home")


# --- token lifetimes -------------------------------------------------------------------------


def test_expiry_is_recorded_once_and_never_slides() -> None:
    reply = {"access_token": "opaque", "expires_in": 30}
    tokenlife.stamp(reply, received_at=1000)
    tokenlife.stamp(reply, received_at=5000)  # read again later: the stamp stays
    assert tokenlife.times(reply) == (1000, 1030)


def test_tapis_absolute_expiry_and_jwt_times_win() -> None:
    reply = {"access_token": "x", "expires_in": 14400, "expires_at_iso": "2026-11-29T12:00:00+00:00"}
    tokenlife.stamp(reply, received_at=2_000_000_000)
    issued, expires = tokenlife.times(reply)
    assert expires == int(dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc).timestamp())
    assert expires - issued == 14400
    token = jwt.encode({"iat": 1500, "exp": 1600}, "k" * 32, algorithm="HS256")
    assert tokenlife.times(tokenlife.stamp({"access_token": token, "expires_in": 999}, received_at=1510)) == (1500, 1600)


@pytest.mark.parametrize("value", ["soon", True, [], {}, -5, float("nan"), "1e99"])
def test_unusable_expires_in_is_refused(value) -> None:
    with pytest.raises(tokenlife.TokenReplyError, match="expires_in"):
        tokenlife.stamp({"access_token": "x", "expires_in": value})


def test_numeric_strings_are_seconds() -> None:
    assert tokenlife.times(tokenlife.stamp({"access_token": "x", "expires_in": "60"}, received_at=100)) == (100, 160)


# --- the identity store ----------------------------------------------------------------------


def test_a_name_is_bound_to_one_subject(tmp_path: Path) -> None:
    store = identities.IdentityStore(str(tmp_path / "ids.sqlite"))
    store.bind("carol", "https://op", "sub-1")
    store.bind("carol", "https://op", "sub-1")  # again: fine
    with pytest.raises(identities.AccountConflict):
        store.bind("carol", "https://op", "sub-2")
    with pytest.raises(identities.AccountConflict):
        store.bind("carol2", "https://op", "sub-1")
    assert store.name_for("https://op", "sub-1") == "carol"
    store.set_posix("carol", identities.Posix(5001, 6001, "04/1/Carol"))
    store.close()
    again = identities.IdentityStore(str(tmp_path / "ids.sqlite"))  # kept across hub restarts
    assert again.posix("carol") == identities.Posix(5001, 6001, "04/1/Carol")
    assert (tmp_path / "ids.sqlite").stat().st_mode & 0o077 == 0


# --- single flight ---------------------------------------------------------------------------


def test_one_refresh_in_flight_and_late_callers_get_its_result() -> None:
    calls = []

    async def scenario() -> list:
        flights = SingleFlight(wait_timeout=5)

        async def work() -> dict:
            calls.append(1)
            await asyncio.sleep(0.05)
            return {"auth_state": {"refresh_token": "new"}}

        results = await asyncio.gather(*(flights.run("alice", "old", work) for _ in range(6)))
        late = await flights.run("alice", "old", work)  # a request that read the old state before it was saved
        return [*results, late]

    results = asyncio.run(scenario())
    assert len(calls) == 1 and all(r == {"auth_state": {"refresh_token": "new"}} for r in results)


# --- ID tokens -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}


def _keyset(jwks: dict) -> oidc.KeySet:
    async def fetch() -> dict:
        return jwks

    return oidc.KeySet(fetch)


def _token(key, **claims) -> str:
    now = int(time.time())
    base = {"iss": "https://op", "aud": "hub", "sub": "s1", "iat": now, "exp": now + 60, "nonce": "n"}
    return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.mark.parametrize("claims,check", [({"iss": "https://evil"}, "iss"), ({"aud": "other"}, "aud"),
                                          ({"exp": 1000, "iat": 900}, "exp"), ({"nonce": "x"}, "nonce"),
                                          ({"aud": ["hub", "other"]}, "azp"), ({"iat": int(time.time()) + 3600}, "iat")])
def test_each_failed_check_is_named(signing, claims: dict, check: str) -> None:
    key, jwk = signing
    with pytest.raises(oidc.IDTokenError) as info:
        asyncio.run(oidc.validate(_token(key, **claims), _keyset({"keys": [jwk]}), issuer="https://op", client_id="hub", nonce="n"))
    assert info.value.check == check


def test_a_valid_token_passes_and_alg_none_never_does(signing) -> None:
    key, jwk = signing
    keys = _keyset({"keys": [jwk]})
    assert asyncio.run(oidc.validate(_token(key), keys, issuer="https://op", client_id="hub", nonce="n"))["sub"] == "s1"
    unsigned = jwt.encode({"iss": "https://op", "aud": "hub", "sub": "s1"}, None, algorithm="none")
    with pytest.raises(oidc.IDTokenError) as info:
        asyncio.run(oidc.validate(unsigned, keys, issuer="https://op", client_id="hub", nonce=None))
    assert info.value.check == "alg"


def test_nonces_are_bound_to_the_login_state() -> None:
    assert oidc.nonce_for(b"secret", "state-1") == oidc.nonce_for(b"secret", "state-1")
    assert oidc.nonce_for(b"secret", "state-1") != oidc.nonce_for(b"secret", "state-2")
    assert oidc.nonce_for(b"secret", "state-1") != oidc.nonce_for(b"other", "state-1")


def test_each_user_gets_their_own_id_from_the_range_once_and_keeps_it(tmp_path) -> None:
    """notebook_uid_range: ids are given lowest first, kept (across a new store on the same file, and when the range
    changes), never shared, and a full range is said to be full."""
    import pytest
    from deployer_hub import identities

    store = identities.IdentityStore(str(tmp_path / "identities.sqlite"))
    assert [store.user_id(name, 200000, 200002) for name in ("jdoe", "alice", "bob")] == [(200000, False), (200001, False), (200002, False)]
    with pytest.raises(identities.NoIdLeft, match="200000-200002"):
        store.user_id("carol", 200000, 200002)
    store.reowned("alice")
    again = identities.IdentityStore(str(tmp_path / "identities.sqlite"))  # a restarted hub (or one restored from a backup)
    assert again.user_id("alice", 200000, 200002) == (200001, True)
    assert again.user_id("jdoe", 300000, 300009) == (200000, False)  # a changed range keeps what was given
    assert again.user_id("carol", 300000, 300009) == (300000, False)
    # An id is never given twice, even where a row went missing: files of a user who left may still carry it.
    again._db.execute("DELETE FROM user_ids WHERE hub_name = 'jdoe'")
    with pytest.raises(identities.NoIdLeft):
        identities.IdentityStore(str(tmp_path / "identities.sqlite")).user_id("dave", 200000, 200002)
