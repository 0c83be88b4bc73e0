from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from seatlock.accounts.tokens import TokenCodec, digest, load_or_create_secret
from seatlock.errors import NotAuthenticated
from seatlock.settings import Settings

SECRET = "s" * 40


def test_issue_and_decode_round_trip() -> None:
    codec = TokenCodec(SECRET, 15)
    principal = codec.decode(codec.issue(7, "admin", "sess-1"))
    assert (principal.user_id, principal.role, principal.session_id) == (7, "admin", "sess-1")
    assert principal.is_admin
    assert principal.token_id
    assert abs(principal.expires_at - (time.time() + 15 * 60)) < 5


def test_tokens_are_hs256_with_the_required_claims() -> None:
    token = TokenCodec(SECRET, 15).issue(7, "user", "sess-1")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert {"exp", "iat", "sub", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60


def test_issued_in_the_past_is_expired() -> None:
    codec = TokenCodec(SECRET, 1)
    with pytest.raises(NotAuthenticated, match="expired"):
        codec.decode(codec.issue(7, "user", "s", now=time.time() - 61))


def test_another_secret_is_refused() -> None:
    token = TokenCodec("t" * 40, 15).issue(7, "user", "s")
    with pytest.raises(NotAuthenticated):
        TokenCodec(SECRET, 15).decode(token)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenCodec("short", 15)


def test_digest_is_sha256_hex_and_stable() -> None:
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert digest("abc") != digest("abd")


def test_generated_secret_is_kept_for_every_worker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_or_create_secret(settings)
    assert len(first) >= 32
    assert load_or_create_secret(settings) == first
    assert load_or_create_secret(settings.replace(jwt_secret="x" * 40)) == "x" * 40


def test_a_verified_token_is_still_checked_for_expiry_on_every_use() -> None:
    codec = TokenCodec(SECRET, 15)
    token = codec.issue(7, "user", "sess-1")
    principal = codec.decode(token)
    assert codec.decode(token) is principal  # verified once, then served from the cache
    with pytest.raises(NotAuthenticated, match="Token has expired"):
        codec.decode(token, now=principal.expires_at)
    assert codec.decode(token, now=principal.expires_at - 1) == principal


def test_the_verified_token_cache_is_bounded_and_keyed_by_the_whole_token() -> None:
    codec = TokenCodec(SECRET, 15)
    codec.max_verified = 3
    tokens = [codec.issue(n, "user", f"sess-{n}") for n in range(5)]
    principals = [codec.decode(t) for t in tokens]
    assert len(codec._verified) == 3
    assert codec.decode(tokens[0]) == principals[0]  # evicted, verified again
    forged = tokens[1][:-2] + ("AA" if not tokens[1].endswith("AA") else "BB")
    codec.decode(tokens[1])
    with pytest.raises(NotAuthenticated, match="Could not validate credentials"):
        codec.decode(forged)
