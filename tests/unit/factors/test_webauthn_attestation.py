"""WebAuthn registration with an AAGUID allow-list (CLOUDMFA_WEBAUTHN_ATTESTATION=direct): only
approved authenticator models, and only when a certificate chain to the configured roots vouches
for the model (WebAuthn §8.2 packed attestation). Pure: py_webauthn and the factor's register
step, no service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from cloudmfa.config import Settings
from cloudmfa.errors import InvalidCode
from cloudmfa.factors.webauthn.register import creation_options, verify_registration
from cloudmfa.factors.webauthn.relying_party import RelyingParty
from webauthn_authenticator import SoftAuthenticator, uuid_bytes

APPROVED = "cb69481e-8ff7-4039-93ec-0a2729a154a8"  # a YubiKey 5
OTHER = "ee882879-721c-4913-9775-3dfcce97072a"
ORIGIN = "https://login.example.com"
FIDO_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")

Issued = tuple[ec.EllipticCurvePrivateKey, bytes]


def _name(common: str, unit: str | None = None) -> x509.Name:
    parts = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Vendor"),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ]
    if unit:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(parts)


class Vendor:
    """An authenticator vendor: a root certificate, and attestation certificates under it."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.root = (
            x509.CertificateBuilder()
            .subject_name(_name("Test Vendor Root CA"))
            .issuer_name(_name("Test Vendor Root CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def attestation(self, aaguid: str | None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("Test Authenticator", "Authenticator Attestation"))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if aaguid is not None:
            value = b"\x04\x10" + uuid_bytes(aaguid)  # an OCTET STRING of the 16 bytes
            builder = builder.add_extension(
                x509.UnrecognizedExtension(FIDO_AAGUID, value), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        return key, certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def vendor() -> Vendor:
    return Vendor()


def relying_party(vendor: Vendor) -> RelyingParty:
    return RelyingParty(
        id="example.com",
        name="Example",
        origins=(ORIGIN,),
        require_user_verification=True,
        attestation="direct",
        allowed_aaguids=frozenset({APPROVED}),
        attestation_roots=(vendor.pem(),),
    )


def register(
    rp: RelyingParty,
    make: Callable[[SoftAuthenticator, dict[str, Any]], dict[str, Any]],
    aaguid: str,
) -> str:
    challenge = b"c" * 32
    options = creation_options(
        rp, user_handle=b"u" * 16, user_name="ada@example.com", challenge=challenge, existing=[]
    )
    assert options["attestation"] == "direct"
    authenticator = SoftAuthenticator(origin=ORIGIN, aaguid=aaguid)
    stored, _ = verify_registration(
        rp, credential=make(authenticator, options), challenge=challenge
    )
    return stored.aaguid


def test_an_approved_model_attested_under_the_roots_registers(vendor: Vendor) -> None:
    issued = vendor.attestation(APPROVED)
    rp = relying_party(vendor)
    assert register(rp, lambda a, o: a.create(o, attestation=issued), APPROVED) == APPROVED
    # A certificate that names no model vouches through its chain alone
    plain = vendor.attestation(None)
    assert register(rp, lambda a, o: a.create(o, attestation=plain), APPROVED) == APPROVED


@pytest.mark.parametrize(
    "case",
    [
        "a model not on the list",
        "no attestation",
        "self attestation",
        "another vendor's chain",
        "a certificate naming another model",
    ],
)
def test_anything_else_is_refused(vendor: Vendor, case: str) -> None:
    rp = relying_party(vendor)
    makers: dict[str, tuple[Callable[[SoftAuthenticator, dict[str, Any]], Any], str]] = {
        "a model not on the list": (
            lambda a, o: a.create(o, attestation=vendor.attestation(OTHER)),
            OTHER,
        ),
        "no attestation": (lambda a, o: a.create(o), APPROVED),
        "self attestation": (lambda a, o: a.create(o, self_attested=True), APPROVED),
        "another vendor's chain": (
            lambda a, o: a.create(o, attestation=Vendor().attestation(APPROVED)),
            APPROVED,
        ),
        "a certificate naming another model": (
            lambda a, o: a.create(o, attestation=vendor.attestation(OTHER)),
            APPROVED,
        ),
    }
    why = {
        "a model not on the list": "not approved",
        "no attestation": "only attested",
        "self attestation": "only attested",
        "another vendor's chain": "does not verify",
        "a certificate naming another model": "names another",
    }
    make, aaguid = makers[case]
    with pytest.raises(InvalidCode, match=why[case]):
        register(rp, make, aaguid)


def test_an_allow_list_needs_direct_attestation_and_roots(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ATTESTATION_ROOTS"):
        Settings(_env_file=None, webauthn_attestation="direct", webauthn_allowed_aaguids=APPROVED)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(Vendor().pem() + Vendor().pem())
    with pytest.raises(ValidationError, match="ATTESTATION=direct"):
        Settings(
            _env_file=None,
            webauthn_allowed_aaguids=APPROVED,
            webauthn_attestation_roots=str(roots),
        )
    settings = Settings(
        _env_file=None,
        webauthn_attestation="direct",
        webauthn_allowed_aaguids=APPROVED.upper(),
        webauthn_attestation_roots=str(roots),
    )
    rp = RelyingParty.from_settings(settings)
    assert rp.allowed_aaguids == {APPROVED}
    assert len(rp.attestation_roots) == 2


@pytest.mark.parametrize(
    ("origins", "problem"),
    [
        ("https://evil.example", "not on the relying party"),
        ("https://example.com.evil.net", "not on the relying party"),
        ("http://login.example.com", "not an https:// origin"),
        ("https://login.example.com/path", "not an https:// origin"),
    ],
)
def test_origins_must_be_on_the_relying_party(origins: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Settings(_env_file=None, webauthn_rp_id="example.com", webauthn_origins=origins)


def test_origins_default_to_the_public_urls_and_may_be_several() -> None:
    settings = Settings(_env_file=None, public_url="https://login.example.com/mfa/")
    assert settings.effective_webauthn_origins == ("https://login.example.com",)
    settings = Settings(
        _env_file=None,
        webauthn_rp_id="example.com",
        webauthn_origins="https://login.example.com, https://app.example.com/",
    )
    assert settings.effective_webauthn_origins == (
        "https://login.example.com",
        "https://app.example.com",
    )
