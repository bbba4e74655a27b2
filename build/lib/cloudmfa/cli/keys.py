"""``cloudmfa rotate-signing-key`` and ``rotate-secret-key``: the two key rotations."""

from __future__ import annotations

import argparse
from typing import Any

from cloudmfa.cli.common import CliError, load_settings, run_async
from cloudmfa.config import Settings

# --- rotate-signing-key ------------------------------------------------------------------


async def _rotate(settings: Settings) -> str:
    from datetime import timedelta

    from cloudmfa.security.tokens import PUBLISH_LEAD_S, generate_signing_key
    from cloudmfa.services import Services
    from cloudmfa.store import keys as key_repo

    svc = Services.build(settings)
    try:
        await svc.start()
        now = svc.clock.now()
        key = generate_signing_key(now)
        async with svc.engine.begin() as conn:
            # The current key keeps signing while the new one is published but not yet used.
            await key_repo.retire_active_keys(conn, now + timedelta(seconds=PUBLISH_LEAD_S))
            await key_repo.insert_key(conn, key, svc.secretbox)
        return key.kid
    finally:
        await svc.close()


def cmd_rotate_signing_key(_args: argparse.Namespace) -> None:
    settings = load_settings()
    kid = run_async(lambda: _rotate(settings))
    from cloudmfa.security.tokens import PUBLISH_LEAD_S

    print(
        f"new signing key {kid} is published in the JWKS now and signs from {PUBLISH_LEAD_S} s "
        "on (so relying parties' cached JWKS know it first); the previous key signs until then "
        f"and stays in the JWKS until its tokens expire ({settings.access_token_ttl_s} s later)"
    )


# --- rotate-secret-key -------------------------------------------------------------------


def cmd_rotate_secret_key(args: argparse.Namespace) -> None:
    from cloudmfa.security.secretbox import (
        SecretKeyError,
        format_key,
        load_key_ring,
        new_key,
        write_key_file,
    )

    if args.generate_key:
        print(format_key(new_key([])))
        return
    settings = load_settings()
    try:
        keys, path = load_key_ring(settings.secret_keys, settings.data_dir)
    except SecretKeyError as exc:
        raise CliError(f"CLOUDMFA_SECRET_KEYS: {exc}") from None

    async def rotate() -> None:
        from cloudmfa.flows.maintenance import pending_reencryption, reencrypt_secrets
        from cloudmfa.services import Services

        svc = Services.build(settings)
        try:
            await svc.start()
            pending = await pending_reencryption(svc)
            if pending:
                print(
                    f"resuming: {pending} secret(s) are not yet under key "
                    f"{svc.secretbox.current_id}"
                )
            elif path is not None:
                fresh = new_key(keys)
                write_key_file(path, [fresh, *keys])
                svc.secretbox.use_keys([fresh, *keys])
                print(f"added key {fresh.id} to {path}; it encrypts from now on")
            else:
                print(
                    f"every secret is already under key {svc.secretbox.current_id}, the first of "
                    "CLOUDMFA_SECRET_KEYS. To rotate: generate a key with "
                    "`cloudmfa rotate-secret-key --generate-key`, put it first in "
                    "CLOUDMFA_SECRET_KEYS on every replica, then run this command again."
                )
                return

            def progress(report: Any) -> None:
                print(
                    f"  re-encrypted {report.reencrypted}, "
                    f"already current {report.already_current}",
                    flush=True,
                )

            report = await reencrypt_secrets(svc, progress=progress)
            print(
                f"done: {report.reencrypted} secret(s) re-encrypted under key "
                f"{svc.secretbox.current_id}; older keys may be removed once every replica runs "
                "with the new ring"
            )
        finally:
            await svc.close()

    run_async(rotate)


def register(sub: Any) -> None:
    rotate = sub.add_parser(
        "rotate-signing-key",
        help="start signing tokens with a new key",
        description="Generate a new token signing key and retire the current one; the retired "
        "key keeps verifying (and stays in the JWKS) until its tokens expire.",
    )
    rotate.set_defaults(func=cmd_rotate_signing_key)

    secret = sub.add_parser(
        "rotate-secret-key",
        help="re-encrypt the stored TOTP seeds and signing keys under a new key",
        description="With the generated key file (no CLOUDMFA_SECRET_KEYS): add a new key to "
        "it and re-encrypt every stored secret (TOTP seeds, token signing keys). With "
        "CLOUDMFA_SECRET_KEYS: re-encrypt every secret under its first key. Commits in "
        "batches; if interrupted, run it again to resume.",
    )
    secret.add_argument(
        "--generate-key",
        action="store_true",
        help="only print a new key (ID:BASE64) to put first in CLOUDMFA_SECRET_KEYS",
    )
    secret.set_defaults(func=cmd_rotate_secret_key)
