"""AWS KMS envelope encryption of the secret key ring (boto3).

Each ring key (32 bytes, AES-256) is a KMS data key: KMS generates it under a KMS key the
operator names, and only its encrypted form (KMS's ``CiphertextBlob``) is ever stored or
configured, as ``CLOUDMFA_SECRET_KEYS_KMS=id:base64-ciphertext,…``. At start the service asks
KMS to decrypt each one and keeps the plain keys in memory only. Every call carries the
encryption context ``{"service": "cloudmfa", "secret_key_id": id}``: a ciphertext does not
decrypt under another id, and IAM policies and CloudTrail can name it.

The service itself needs only ``kms:Decrypt``; making a key (``cloudmfa rotate-secret-key
--generate-key --kms-key-id …``) needs ``kms:GenerateDataKey``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cloudmfa.security.secretbox import SecretKey, SecretKeyError, new_key

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def encryption_context(key_id: str) -> dict[str, str]:
    return {"service": "cloudmfa", "secret_key_id": key_id}


def kms_client(*, region: str | None, endpoint_url: str | None) -> Any:
    """A KMS client; credentials come the usual boto3 way (role, environment, profile)."""
    import boto3  # only a deployment that uses KMS pays for importing boto3

    return boto3.client("kms", region_name=region, endpoint_url=endpoint_url)


def _kms_failure(exc: Exception) -> SecretKeyError:
    # The error's code and message name the problem (AccessDenied, InvalidCiphertext,
    # DisabledException, …) and never hold key material.
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return SecretKeyError(f"AWS KMS: {error.get('Code')}: {error.get('Message')}")
    return SecretKeyError(f"AWS KMS: {type(exc).__name__}: {exc}")


def parse_wrapped_ring(text: str) -> list[tuple[str, bytes]]:
    """``id:base64-ciphertext`` entries, commas or newlines between them."""
    entries: list[tuple[str, bytes]] = []
    for entry in re.split(r"[,\n]", text):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise SecretKeyError(
                "each KMS-wrapped key must look like ID:BASE64 (ID is 1-32 of A-Z a-z 0-9 _ -)"
            )
        try:
            blob = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SecretKeyError(f"KMS-wrapped key {key_id!r} is not valid base64") from None
        if any(existing == key_id for existing, _ in entries):
            raise SecretKeyError(f"secret key id {key_id!r} appears twice")
        entries.append((key_id, blob))
    if not entries:
        raise SecretKeyError("the secret key ring is empty")
    return entries


def unwrap_ring(text: str, client: Any) -> list[SecretKey]:
    """The plain ring: each wrapped key decrypted by KMS (kms:Decrypt)."""
    keys = []
    for key_id, blob in parse_wrapped_ring(text):
        try:
            answer = client.decrypt(
                CiphertextBlob=blob, EncryptionContext=encryption_context(key_id)
            )
        except Exception as exc:  # botocore's errors share no base class worth naming
            raise _kms_failure(exc) from None
        plaintext = bytes(answer["Plaintext"])
        if len(plaintext) != 32:
            raise SecretKeyError(
                f"KMS-wrapped key {key_id!r} is {len(plaintext)} bytes, not 32 (AES-256)"
            )
        keys.append(SecretKey(key_id, plaintext))
    return keys


def generate_wrapped_key(client: Any, kms_key_id: str, existing: list[str]) -> str:
    """A new ring key as KMS generates it (kms:GenerateDataKey), wrapped: ``id:base64``. The
    plain key is dropped at once; only KMS can give it back."""
    key_id = new_key([SecretKey(k, b"") for k in existing]).id
    try:
        answer = client.generate_data_key(
            KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext=encryption_context(key_id)
        )
    except Exception as exc:
        raise _kms_failure(exc) from None
    return f"{key_id}:{base64.b64encode(answer['CiphertextBlob']).decode('ascii')}"
