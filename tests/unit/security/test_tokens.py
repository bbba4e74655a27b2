"""Access tokens (API.md "Tokens"): ES256 JWTs with the listed claims, forgeries refused as
``invalid_token``, key rotation through the key ring and JWKS, and opaque refresh tokens."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cloudmfa.clock import FrozenClock
from cloudmfa.errors import InvalidToken
from cloudmfa.security.tokens import (
    PUBLISH_LEAD_S,
    RELOAD_INTERVAL_S,
    AccessClaims,
    AccessTokens,
    KeyRing,
    SigningKey,
    generate_signing_key,
    hash_opaque_token,
    new_opaque_token,
)

ISSUER = "https://mfa.example.test"
AUDIENCE = "cloudmfa"
TTL_S = 600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(payload)), signature


def sign_es256(private_key: Any, claims: dict[str, Any], kid: str) -> str:
    return jwt.encode(claims, private_key, algorithm="ES256", headers={"kid": kid})


def private_key_of(key: SigningKey) -> Any:
    return serialization.load_pem_private_key(key.private_key_pem.encode("ascii"), password=None)


class Env:
    def __init__(self) -> None:
        self.clock = FrozenClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
        self.key = generate_signing_key(self.clock.now())
        self.ring = KeyRing(clock=self.clock, access_ttl_s=TTL_S)
        self.ring.load([self.key])
        self.tokens = AccessTokens(
            self.ring, clock=self.clock, issuer=ISSUER, audience=AUDIENCE, ttl_s=TTL_S
        )

    def issue(self, **overrides: Any) -> str:
        args: dict[str, Any] = {
            "user_id": "user-1",
            "session_id": "session-1",
            "auth_time": self.clock.now(),
            "amr": ["pwd", "otp", "mfa"],
            "acr": None,
        }
        args.update(overrides)
        return self.tokens.issue(**args)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + TTL_S,
            "jti": str(uuid.uuid4()),
            "sid": "session-1",
            "auth_time": now,
            "amr": ["pwd"],
        }
        claims.update(overrides)
        return claims


@pytest.fixture
def env() -> Env:
    return Env()


def assert_rejected(env: Env, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as exc:
        env.tokens.verify(token)
    assert exc.value.code == "invalid_token" and exc.value.status == 401
    return exc.value


# --- issuing and verifying ----------------------------------------------------------------


def test_issued_token_carries_exactly_the_claims_api_md_lists(env: Env) -> None:
    auth_time = env.clock.now() - timedelta(minutes=3)
    token = env.issue(auth_time=auth_time)
    header, payload, _ = segments(token)

    assert header["alg"] == "ES256" and header["kid"] == env.key.kid
    assert set(payload) == {"iss", "sub", "aud", "iat", "exp", "jti", "sid", "auth_time", "amr"}
    now = int(env.clock.now().timestamp())
    assert payload["iss"] == ISSUER
    assert payload["sub"] == "user-1"
    assert payload["aud"] == AUDIENCE
    assert payload["iat"] == now
    assert payload["exp"] == now + TTL_S
    assert uuid.UUID(payload["jti"])
    assert payload["sid"] == "session-1"
    assert payload["auth_time"] == int(auth_time.timestamp())
    assert payload["amr"] == ["pwd", "otp", "mfa"]


def test_good_token_round_trips_through_verify(env: Env) -> None:
    auth_time = env.clock.now() - timedelta(minutes=3)
    token = env.issue(auth_time=auth_time)
    _, payload, _ = segments(token)
    now = int(env.clock.now().timestamp())

    assert env.tokens.verify(token) == AccessClaims(
        sub="user-1",
        sid="session-1",
        jti=payload["jti"],
        iat=now,
        exp=now + TTL_S,
        auth_time=int(auth_time.timestamp()),
        amr=("pwd", "otp", "mfa"),
        acr=None,
    )


def test_acr_is_present_only_when_given(env: Env) -> None:
    with_acr = env.issue(amr=["hwk", "user", "mfa"], acr="phr")
    assert segments(with_acr)[1]["acr"] == "phr"
    assert env.tokens.verify(with_acr).acr == "phr"

    without = env.issue(acr=None)
    assert "acr" not in segments(without)[1]
    assert env.tokens.verify(without).acr is None


def test_every_token_gets_its_own_jti(env: Env) -> None:
    jtis = {env.tokens.verify(env.issue()).jti for _ in range(20)}
    assert len(jtis) == 20


def test_relying_party_can_verify_with_the_published_jwk(env: Env) -> None:
    token = env.issue()
    (jwk,) = env.ring.jwks()["keys"]
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == "user-1"


def test_jwks_publishes_only_public_key_material(env: Env) -> None:
    (jwk,) = env.ring.jwks()["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert jwk["kid"] == env.key.kid and jwk["alg"] == "ES256" and jwk["use"] == "sig"
    assert "d" not in jwk


def test_jwks_is_a_copy_callers_cannot_corrupt(env: Env) -> None:
    env.ring.jwks()["keys"].clear()
    assert len(env.ring.jwks()["keys"]) == 1


# --- forgeries ----------------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_rejects_token_with_alg_none(env: Env, alg: str, signature: str) -> None:
    forged = f"{b64json({'alg': alg, 'typ': 'JWT', 'kid': env.key.kid})}.{b64json(env.claims())}"
    assert_rejected(env, f"{forged}.{signature}")


def test_rejects_token_signed_with_hs256_using_public_key(env: Env) -> None:
    public_key = private_key_of(env.key).public_key()
    for secret in (
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(env.key.public_jwk).encode(),
    ):
        signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': env.key.kid})}." + (
            b64json(env.claims())
        )
        mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        assert_rejected(env, f"{signing_input}.{b64url(mac)}")


def test_rejects_token_with_unknown_kid(env: Env) -> None:
    stranger = generate_signing_key(env.clock.now())
    assert not env.ring.knows(stranger.kid)
    assert_rejected(env, sign_es256(private_key_of(stranger), env.claims(), stranger.kid))


def test_rejects_token_without_kid(env: Env) -> None:
    token = jwt.encode(env.claims(), private_key_of(env.key), algorithm="ES256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert_rejected(env, token)


def test_rejects_token_with_non_string_kid(env: Env) -> None:
    signing_input = f"{b64json({'alg': 'ES256', 'kid': [env.key.kid]})}.{b64json(env.claims())}"
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(
        signing_input.encode("ascii"), private_key_of(env.key)
    )
    assert_rejected(env, f"{signing_input}.{b64url(signature)}")


def test_rejects_token_signed_by_another_es256_key_under_a_known_kid(env: Env) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assert_rejected(env, sign_es256(other, env.claims(), env.key.kid))


def test_rejects_es384_token_under_a_known_kid(env: Env) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode(env.claims(), other, algorithm="ES384", headers={"kid": env.key.kid})
    assert_rejected(env, token)


def test_rejects_tampered_payload_with_original_signature(env: Env) -> None:
    token = env.issue()
    header, payload, signature = token.split(".")
    claims = json.loads(unb64url(payload))
    claims["sub"] = "admin-user"
    assert_rejected(env, f"{header}.{b64json(claims)}.{signature}")


def test_rejects_tampered_header_with_original_signature(env: Env) -> None:
    token = env.issue()
    _, payload, signature = token.split(".")
    header = b64json({"alg": "ES256", "kid": env.key.kid, "typ": "JWT"})
    assert_rejected(env, f"{header}.{payload}.{signature}")


def test_rejects_token_with_flipped_signature_byte(env: Env) -> None:
    header, payload, signature = env.issue().split(".")
    raw = bytearray(unb64url(signature))
    raw[5] ^= 0x01
    assert_rejected(env, f"{header}.{payload}.{b64url(bytes(raw))}")


# --- time ---------------------------------------------------------------------------------


def test_token_verifies_until_just_before_exp(env: Env) -> None:
    token = env.issue()
    env.clock.advance(seconds=TTL_S - 1)
    assert env.tokens.verify(token).sub == "user-1"


def test_rejects_token_at_exp(env: Env) -> None:
    token = env.issue()
    env.clock.advance(seconds=TTL_S)
    assert_rejected(env, token)


def test_rejects_expired_token(env: Env) -> None:
    token = env.issue()
    env.clock.advance(seconds=TTL_S + 1)
    assert_rejected(env, token)


def test_expiry_is_judged_by_the_injected_clock_not_wall_time() -> None:
    clock = FrozenClock(datetime(2001, 1, 1, tzinfo=UTC))  # exp long past by the wall clock
    ring = KeyRing(clock=clock, access_ttl_s=TTL_S)
    ring.load([generate_signing_key(clock.now())])
    tokens = AccessTokens(ring, clock=clock, issuer=ISSUER, audience=AUDIENCE, ttl_s=TTL_S)
    token = tokens.issue(user_id="u", session_id="s", auth_time=clock.now(), amr=["pwd"], acr=None)
    assert tokens.verify(token).sub == "u"


def test_rejects_token_with_non_integer_exp(env: Env) -> None:
    exp = int(env.clock.now().timestamp()) + TTL_S + 0.5
    assert_rejected(env, sign_es256(private_key_of(env.key), env.claims(exp=exp), env.key.kid))


# --- audience, issuer, claims -------------------------------------------------------------


def test_rejects_token_for_another_audience(env: Env) -> None:
    other = AccessTokens(
        env.ring, clock=env.clock, issuer=ISSUER, audience="another-service", ttl_s=TTL_S
    )
    token = other.issue(user_id="u", session_id="s", auth_time=env.clock.now(), amr=[], acr=None)
    assert other.verify(token).sub == "u"
    assert_rejected(env, token)


def test_rejects_token_from_another_issuer(env: Env) -> None:
    other = AccessTokens(
        env.ring, clock=env.clock, issuer="https://evil.example", audience=AUDIENCE, ttl_s=TTL_S
    )
    token = other.issue(user_id="u", session_id="s", auth_time=env.clock.now(), amr=[], acr=None)
    assert other.verify(token).sub == "u"
    assert_rejected(env, token)


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "iat", "exp", "jti", "sid", "auth_time"])
def test_rejects_properly_signed_token_missing_a_required_claim(env: Env, claim: str) -> None:
    claims = env.claims()
    del claims[claim]
    assert_rejected(env, sign_es256(private_key_of(env.key), claims, env.key.kid))


@pytest.mark.parametrize("amr", ["pwd", [1, 2], {"pwd": True}])
def test_rejects_properly_signed_token_with_malformed_amr(env: Env, amr: Any) -> None:
    token = sign_es256(private_key_of(env.key), env.claims(amr=amr), env.key.kid)
    assert_rejected(env, token)


def test_correctly_signed_hand_made_token_is_accepted(env: Env) -> None:
    # The control for the claim tests above: the same helper with nothing removed verifies.
    token = sign_es256(private_key_of(env.key), env.claims(), env.key.kid)
    assert env.tokens.verify(token).amr == ("pwd",)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "null",
        "Bearer",
        "\u00e9.\u00e9.\u00e9",
        "eyJ.eyJ.x",
        "x" * 10_000,
        b64json([1]) + "." + b64json({}) + ".x",
        b64json({"alg": "ES256"}) + ".bm90IGpzb24.c2ln",
    ],
)
def test_rejects_garbage_strings(env: Env, garbage: str) -> None:
    assert_rejected(env, garbage)


def test_rejects_known_kid_with_non_json_payload(env: Env) -> None:
    header = b64json({"alg": "ES256", "kid": env.key.kid})
    assert_rejected(env, f"{header}.{b64url(b'not json')}.{b64url(b'sig')}")
    assert_rejected(env, f"{header}.{b64json([1, 2])}.{b64url(b'sig')}")


def test_rejects_issued_token_with_extra_segment(env: Env) -> None:
    assert_rejected(env, env.issue() + ".extra")


# --- rotation -----------------------------------------------------------------------------


def rotate(env: Env) -> tuple[SigningKey, SigningKey]:
    """Retire the current key now and add a new active one, as `rotate-signing-key` does."""
    env.clock.advance(minutes=1)
    retired = dataclasses.replace(env.key, retired_at=env.clock.now())
    new = generate_signing_key(env.clock.now())
    env.ring.load([retired, new])
    return retired, new


def test_after_rotation_old_tokens_verify_and_jwks_lists_both_keys(env: Env) -> None:
    old_token = env.issue()
    retired, new = rotate(env)

    assert env.tokens.verify(old_token).sub == "user-1"
    assert {k["kid"] for k in env.ring.jwks()["keys"]} == {retired.kid, new.kid}


def test_after_rotation_new_tokens_are_signed_by_the_new_key(env: Env) -> None:
    _, new = rotate(env)
    token = env.issue()
    assert jwt.get_unverified_header(token)["kid"] == new.kid
    assert env.tokens.verify(token).sub == "user-1"


def test_retired_key_outlives_every_token_it_signed(env: Env) -> None:
    retired, _ = rotate(env)
    # The last token the old key can have signed: issued at retirement, on a replica that
    # had not yet reloaded.
    claims = env.claims()
    last = sign_es256(private_key_of(retired), claims, retired.kid)
    env.clock.advance(seconds=TTL_S - 1)
    env.ring.load([retired, generate_signing_key(env.clock.now())])
    assert env.ring.knows(retired.kid)
    assert env.tokens.verify(last).jti == claims["jti"]


def test_retired_key_is_kept_through_ttl_plus_reload_interval(env: Env) -> None:
    retired, new = rotate(env)
    env.clock.advance(seconds=TTL_S + RELOAD_INTERVAL_S)
    env.ring.load([retired, new])
    assert env.ring.knows(retired.kid)
    assert retired.kid in {k["kid"] for k in env.ring.jwks()["keys"]}


def test_retired_key_is_dropped_after_ttl_plus_margin(env: Env) -> None:
    retired, new = rotate(env)
    # Signed with an exp far in the future, so only the key's removal can make it fail.
    far = int(env.clock.now().timestamp()) + 86_400
    long_lived = sign_es256(private_key_of(retired), env.claims(exp=far), retired.kid)
    assert env.tokens.verify(long_lived).exp == far

    env.clock.advance(seconds=TTL_S + RELOAD_INTERVAL_S + 120)
    env.ring.load([retired, new])

    assert not env.ring.knows(retired.kid)
    assert_rejected(env, long_lived)
    assert [k["kid"] for k in env.ring.jwks()["keys"]] == [new.kid]
    assert env.tokens.verify(env.issue()).sub == "user-1"


def test_signer_uses_the_newest_active_key_whatever_the_load_order(env: Env) -> None:
    t0 = env.clock.now()
    older = generate_signing_key(t0)
    newer = generate_signing_key(t0 + timedelta(minutes=5))
    newest_but_retired = dataclasses.replace(
        generate_signing_key(t0 + timedelta(minutes=10)), retired_at=t0 + timedelta(minutes=10)
    )
    env.clock.advance(minutes=20)  # every key is past its publication lead
    for order in ([older, newer, newest_but_retired], [newest_but_retired, newer, older]):
        env.ring.load(order)
        assert jwt.get_unverified_header(env.issue())["kid"] == newer.kid


def test_a_rotated_in_key_is_published_before_it_signs(env: Env) -> None:
    # Rotation as the CLI does it: the current key retires only once the new one has been in
    # the JWKS for PUBLISH_LEAD_S, so relying parties with a cached JWKS already know it.
    now = env.clock.now()
    current = dataclasses.replace(env.key, created_at=now - timedelta(days=1))
    current = dataclasses.replace(current, retired_at=now + timedelta(seconds=PUBLISH_LEAD_S))
    fresh = generate_signing_key(now)
    env.ring.load([current, fresh])
    assert fresh.kid in [k["kid"] for k in env.ring.jwks()["keys"]]
    assert jwt.get_unverified_header(env.issue())["kid"] == current.kid

    env.clock.advance(seconds=PUBLISH_LEAD_S + 1)
    env.ring.load([current, fresh])
    assert jwt.get_unverified_header(env.issue())["kid"] == fresh.kid
    assert env.ring.knows(current.kid)  # its tokens still verify until they expire


def test_loading_without_an_active_key_is_refused(env: Env) -> None:
    retired = dataclasses.replace(env.key, retired_at=env.clock.now())
    with pytest.raises(RuntimeError):
        env.ring.load([retired])
    with pytest.raises(RuntimeError):
        env.ring.load([])


def test_unloaded_ring_refuses_to_sign() -> None:
    clock = FrozenClock()
    ring = KeyRing(clock=clock, access_ttl_s=TTL_S)
    tokens = AccessTokens(ring, clock=clock, issuer=ISSUER, audience=AUDIENCE, ttl_s=TTL_S)
    with pytest.raises(RuntimeError):
        tokens.issue(user_id="u", session_id="s", auth_time=clock.now(), amr=[], acr=None)
    assert ring.jwks() == {"keys": []}
    assert ring.needs_reload()


# --- opaque tokens ------------------------------------------------------------------------


def test_new_opaque_token_has_at_least_256_random_bits() -> None:
    token, _ = new_opaque_token()
    assert len(unb64url(token)) >= 32
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_new_opaque_tokens_do_not_repeat() -> None:
    tokens = {new_opaque_token()[0] for _ in range(1000)}
    assert len(tokens) == 1000


def test_new_opaque_token_stores_only_a_sha256_hash() -> None:
    token, stored = new_opaque_token()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert stored == hash_opaque_token(token)
    assert token not in stored
    assert hash_opaque_token(token + "x") != stored
