"""Whatever a client sends as a credential, the WebAuthn checks answer InvalidCode (a 401) and
never another exception (a 500): JSON of any shape, and well-shaped answers whose base64url
fields hold arbitrary bytes (broken CBOR, client data, signatures, COSE keys)."""

from __future__ import annotations

import base64
import json
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmfa.errors import InvalidCode
from cloudmfa.factors.webauthn.authenticate import verify_assertion
from cloudmfa.factors.webauthn.credential import StoredCredential
from cloudmfa.factors.webauthn.register import verify_registration
from cloudmfa.factors.webauthn.relying_party import RelyingParty
from webauthn_authenticator import SoftAuthenticator

RP = RelyingParty(
    id="localhost",
    name="cloudmfa",
    origins=("http://localhost:8000",),
    require_user_verification=True,
    attestation="none",
    allowed_aaguids=frozenset(),
    attestation_roots=(),
)
CHALLENGE = b"c" * 32
CREDENTIAL_ID = b"i" * 32
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
b64_fields = st.one_of(
    st.binary(max_size=120).map(_b64),
    st.text(max_size=40),
    st.builds(lambda v: _b64(cbor2.dumps(v)), json_values),
    st.builds(lambda v: _b64(json.dumps(v).encode()), json_values),
)


def _stored() -> StoredCredential:
    auth = SoftAuthenticator()
    auth.create(
        {"rp": {"id": "localhost"}, "user": {"id": _b64(b"u")}, "challenge": _b64(CHALLENGE)}
    )
    [credential] = auth.credentials.values()
    return StoredCredential(CREDENTIAL_ID, credential.cose_public_key(), (), "", False, False)


STORED = _stored()


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_object_is_refused_as_invalid_code(credential: dict[str, Any]) -> None:
    with pytest.raises(InvalidCode):
        verify_registration(RP, credential=credential, challenge=CHALLENGE)
    with pytest.raises(InvalidCode):
        verify_assertion(
            RP,
            credential=credential,
            challenge=CHALLENGE,
            stored=STORED,
            stored_count=0,
            require_uv=True,
        )


def _client_data(kind: str) -> str:
    """Client data that checks out, so the fuzzed bytes behind it get parsed too."""
    data = {"type": kind, "challenge": _b64(CHALLENGE), "origin": "http://localhost:8000"}
    return _b64(json.dumps(data).encode())


client_data_fields = b64_fields | st.sampled_from([_client_data("webauthn.get")])


@FUZZ
@given(client_data_fields, b64_fields, b64_fields, b64_fields, st.none() | b64_fields)
def test_well_shaped_answers_with_any_bytes_are_refused_as_invalid_code(
    client_data: str, authenticator_data: str, signature: str, attestation: str, handle: Any
) -> None:
    assertion = {
        "id": _b64(CREDENTIAL_ID),
        "rawId": _b64(CREDENTIAL_ID),
        "type": "public-key",
        "response": {
            "clientDataJSON": client_data,
            "authenticatorData": authenticator_data,
            "signature": signature,
            "userHandle": handle,
        },
    }
    with pytest.raises(InvalidCode):
        verify_assertion(
            RP,
            credential=assertion,
            challenge=CHALLENGE,
            stored=STORED,
            stored_count=0,
            require_uv=True,
        )
    registration = {
        **assertion,
        "response": {
            "clientDataJSON": _client_data("webauthn.create"),
            "attestationObject": attestation,
        },
    }
    with pytest.raises(InvalidCode):
        verify_registration(RP, credential=registration, challenge=CHALLENGE)
