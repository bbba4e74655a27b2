"""Operator tasks that walk the whole database: re-encrypting secrets after a key rotation.

The secrets are the factors' seeds and the private halves of the token signing keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cloudmfa.services import Services
from cloudmfa.store import factors as factor_repo
from cloudmfa.store import keys as key_repo

BATCH_SIZE = 200


@dataclass
class ReencryptReport:
    reencrypted: int = 0
    already_current: int = 0


async def pending_reencryption(svc: Services) -> int:
    """How many stored secrets are not yet under the current key."""
    current = svc.secretbox.current_id
    async with svc.reader.connect() as conn:
        stored_keys = await key_repo.stored_private_keys(conn)
    count = sum(1 for _, stored in stored_keys if key_repo.sealed_under(stored) != current)
    after = ""
    while True:
        async with svc.reader.connect() as conn:
            rows = await factor_repo.secrets_after(conn, after, BATCH_SIZE)
        if not rows:
            return count
        count += sum(1 for _, blob in rows if svc.secretbox.key_id_of(blob) != current)
        after = rows[-1][0]


async def reencrypt_secrets(
    svc: Services, *, progress: Callable[[ReencryptReport], None] | None = None
) -> ReencryptReport:
    """Re-encrypt every stored secret under the current key, one committed batch at a time.

    Resumable: an interrupted run leaves each batch either done or untouched, and the next run
    skips whatever is already under the current key.
    """
    report = ReencryptReport()
    current = svc.secretbox.current_id
    async with svc.engine.begin() as conn:  # a handful of signing keys: one batch
        for kid, stored in await key_repo.stored_private_keys(conn):
            if key_repo.sealed_under(stored) == current:
                report.already_current += 1
                continue
            pem = key_repo.unseal(svc.secretbox, kid, stored)
            resealed = key_repo.seal(svc.secretbox, kid, pem)
            if await key_repo.replace_private_key(conn, kid, stored, resealed):
                report.reencrypted += 1
    after = ""
    while True:
        async with svc.engine.begin() as conn:
            rows = await factor_repo.secrets_after(conn, after, BATCH_SIZE)
            if not rows:
                break
            for factor_id, blob in rows:
                if svc.secretbox.key_id_of(blob) == current:
                    report.already_current += 1
                    continue
                plaintext = svc.secretbox.decrypt(blob, context=factor_id)
                fresh = svc.secretbox.encrypt(plaintext, context=factor_id)
                if await factor_repo.replace_secret(conn, factor_id, blob, fresh):
                    report.reencrypted += 1
            after = rows[-1][0]
        if progress is not None:
            progress(report)
    return report
