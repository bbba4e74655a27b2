"""Secrets at rest (TOTP seeds): AES-256-GCM under a versioned key ring.

The ring comes from ``CLOUDMFA_SECRET_KEYS`` ("id:base64key,id:base64key", the first one encrypts,
all of them decrypt) or, with zero configuration, from a key file generated under the data
directory. Each ciphertext names the key that made it, so keys can be rotated and the stored
seeds re-encrypted one batch at a time (``cloudmfa rotate-secret-key``).

Ciphertext layout: ``key id`` ``0x00`` ``96-bit nonce`` ``AES-GCM ciphertext and tag``. The
associated data binds a ciphertext to its row (the factor id), so a seed copied onto another
row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudmfa.security.private_files import PRIVATE_FILE_MODE, make_private_dir

log = logging.getLogger("cloudmfa")

KEY_FILE_NAME = "secret-keys"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NONCE_BYTES = 12


class SecretKeyError(ValueError):
    """The key ring is missing, malformed, or cannot open a stored secret."""


@dataclass(frozen=True, slots=True)
class SecretKey:
    id: str
    key: bytes


def parse_key_ring(text: str) -> list[SecretKey]:
    """Parse "id:base64key,..." (commas or newlines between entries)."""
    keys: list[SecretKey] = []
    # Comments are whole lines (the key file's header has commas of its own); drop them
    # before splitting entries on commas.
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    for entry in re.split(r"[,\n]", "\n".join(lines)):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise SecretKeyError(
                "each secret key must look like ID:BASE64 (ID is 1-32 of A-Z a-z 0-9 _ -)"
            )
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SecretKeyError(f"secret key {key_id!r} is not valid base64") from None
        if len(raw) != 32:
            raise SecretKeyError(
                f"secret key {key_id!r} must be 32 bytes (AES-256), got {len(raw)}"
            )
        if any(k.id == key_id for k in keys):
            raise SecretKeyError(f"secret key id {key_id!r} appears twice")
        keys.append(SecretKey(key_id, raw))
    if not keys:
        raise SecretKeyError("the secret key ring is empty")
    return keys


def format_key(key: SecretKey) -> str:
    return f"{key.id}:{base64.b64encode(key.key).decode('ascii')}"


def new_key(existing: list[SecretKey]) -> SecretKey:
    taken = {k.id for k in existing}
    number = len(existing) + 1
    while f"k{number}" in taken:
        number += 1
    return SecretKey(f"k{number}", AESGCM.generate_key(bit_length=256))


class SecretBox:
    def __init__(
        self, keys: list[SecretKey], *, reload: Callable[[], list[SecretKey]] | None = None
    ) -> None:
        """``reload`` re-reads the ring when a ciphertext names a key this process has not
        seen: another process rotated the key file while this one was running."""
        self._reload = reload
        self.use_keys(keys)

    def use_keys(self, keys: list[SecretKey]) -> None:
        if not keys:
            raise SecretKeyError("the secret key ring is empty")
        self.keys = list(keys)
        self._ciphers = {k.id: AESGCM(k.key) for k in keys}

    @property
    def current_id(self) -> str:
        return self.keys[0].id

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext, context.encode())
        return self.current_id.encode("ascii") + b"\x00" + nonce + sealed

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        key_id, sep, rest = bytes(blob).partition(b"\x00")
        name = key_id.decode("ascii", "replace")
        if name not in self._ciphers and self._reload is not None:
            self.use_keys(self._reload())
        cipher = self._ciphers.get(name)
        if not sep or cipher is None or len(rest) <= _NONCE_BYTES:
            raise SecretKeyError(
                f"no key {key_id.decode('ascii', 'replace')!r} in the ring for a stored secret"
            )
        try:
            return cipher.decrypt(rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SecretKeyError("a stored secret failed authentication") from None

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        return bytes(blob).partition(b"\x00")[0].decode("ascii", "replace")


def key_file_path(data_dir: str) -> Path:
    return Path(data_dir) / KEY_FILE_NAME


def write_key_file(path: Path, keys: list[SecretKey]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    make_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # a .tmp left by an interrupted run keeps its old mode
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "# cloudmfa secret keys: the first encrypts, all decrypt. Keep this file safe.\n"
        )
        handle.write("\n".join(format_key(k) for k in keys) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def open_secretbox(configured: str | None, data_dir: str) -> SecretBox:
    keys, path = load_key_ring(configured, data_dir)
    if path is None:
        return SecretBox(keys)
    return SecretBox(keys, reload=lambda: parse_key_ring(path.read_text()))


def load_key_ring(configured: str | None, data_dir: str) -> tuple[list[SecretKey], Path | None]:
    """The configured ring, or the key file (generated on first use). Returns the keys and the
    file they came from (None when configured through the environment)."""
    if configured:
        return parse_key_ring(configured), None
    path = key_file_path(data_dir)
    if path.exists():
        return parse_key_ring(path.read_text()), path
    keys = [new_key([])]
    write_key_file(path, keys)
    log.warning(
        "!!! CLOUDMFA_SECRET_KEYS is not set: generated a secret key into %s (mode 0600). "
        "Anyone who reads that file can decrypt the stored TOTP seeds; in production set "
        "CLOUDMFA_SECRET_KEYS from a secret manager instead. !!!",
        path,
    )
    return keys, path
