"""Where the secret key ring comes from, as configured: exactly one of

- ``CLOUDMFA_SECRET_KEYS``: the ring itself (``id:base64key,…``), from a secret manager;
- ``CLOUDMFA_SECRET_KEYS_FILE``: a file holding the ring (a mounted secret), re-read when a
  stored secret names a key this process has not seen;
- ``CLOUDMFA_SECRET_KEYS_KMS``: the ring as AWS KMS data keys, each wrapped (security/kms.py);
- none of them: a key file generated in the data directory (development only, loudly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cloudmfa.security.secretbox import (
    SecretBox,
    SecretKey,
    SecretKeyError,
    load_key_ring,
    parse_key_ring,
)


class KeySettings(Protocol):
    @property
    def secret_keys(self) -> str | None: ...
    @property
    def secret_keys_file(self) -> str | None: ...
    @property
    def secret_keys_kms(self) -> str | None: ...
    @property
    def aws_region(self) -> str | None: ...
    @property
    def aws_endpoint_url(self) -> str | None: ...
    @property
    def data_dir(self) -> str: ...


def source_name(settings: KeySettings) -> str:
    """The variable the ring comes from, for messages; the generated file when none is set."""
    if settings.secret_keys_kms:
        return "CLOUDMFA_SECRET_KEYS_KMS"
    if settings.secret_keys_file:
        return "CLOUDMFA_SECRET_KEYS_FILE"
    if settings.secret_keys:
        return "CLOUDMFA_SECRET_KEYS"
    return "the generated key file"


def _read_file(path: Path) -> list[SecretKey]:
    try:
        return parse_key_ring(path.read_text())
    except OSError as exc:
        raise SecretKeyError(f"cannot read {path}: {exc.strerror}") from None


def load_configured_ring(settings: KeySettings) -> tuple[list[SecretKey], Path | None]:
    """The ring, and the generated key file it came from (None for any configured source: the
    service never writes those)."""
    if settings.secret_keys_kms:
        from cloudmfa.security import kms

        client = kms.kms_client(region=settings.aws_region, endpoint_url=settings.aws_endpoint_url)
        return kms.unwrap_ring(settings.secret_keys_kms, client), None
    if settings.secret_keys_file:
        return _read_file(Path(settings.secret_keys_file)), None
    return load_key_ring(settings.secret_keys, settings.data_dir)


def open_configured_secretbox(settings: KeySettings) -> SecretBox:
    keys, generated = load_configured_ring(settings)
    reread = generated or (Path(settings.secret_keys_file) if settings.secret_keys_file else None)
    if reread is None:
        return SecretBox(keys)
    return SecretBox(keys, reload=lambda: _read_file(reread))
