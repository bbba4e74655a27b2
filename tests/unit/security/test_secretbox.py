"""Secrets at rest (TOTP seeds): AES-256-GCM under a versioned key ring, bound to the row that
holds them, rotatable, and a zero-configuration key file only its owner can read."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudmfa.security.secretbox import (
    KEY_FILE_NAME,
    SecretBox,
    SecretKey,
    SecretKeyError,
    format_key,
    key_file_path,
    load_key_ring,
    new_key,
    open_secretbox,
    parse_key_ring,
    write_key_file,
)
from conftest import TEST_SECRET_KEYS

SEED = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def key(key_id: str) -> SecretKey:
    return SecretKey(key_id, AESGCM.generate_key(bit_length=256))


def ring_text(*keys: SecretKey) -> str:
    return ",".join(format_key(k) for k in keys)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that takes nothing away: the file mode must come from the code itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --- encrypt / decrypt ------------------------------------------------------------------------


def test_round_trip() -> None:
    box = SecretBox([key("k1")])
    blob = box.encrypt(SEED, context="factor-1")
    assert box.decrypt(blob, context="factor-1") == SEED


def test_round_trip_of_empty_and_binary_plaintexts() -> None:
    box = SecretBox([key("k1")])
    for plaintext in (b"", b"\x00\xff" * 50, os.urandom(1000)):
        assert box.decrypt(box.encrypt(plaintext, context="c"), context="c") == plaintext


def test_ciphertext_names_its_key_and_hides_the_plaintext() -> None:
    box = SecretBox([key("k1")])
    blob = box.encrypt(SEED, context="factor-1")
    assert blob.startswith(b"k1\x00")
    assert SecretBox.key_id_of(blob) == "k1"
    assert SEED not in blob
    # key id, separator, 96-bit nonce, ciphertext, 128-bit tag
    assert len(blob) == len(b"k1\x00") + 12 + len(SEED) + 16


def test_each_encryption_uses_a_fresh_nonce() -> None:
    box = SecretBox([key("k1")])
    blobs = {box.encrypt(SEED, context="factor-1") for _ in range(50)}
    assert len(blobs) == 50
    assert len({b[3:15] for b in blobs}) == 50


def test_decrypt_accepts_memoryview_and_bytearray() -> None:
    # Database drivers hand back a BLOB as any of these.
    box = SecretBox([key("k1")])
    blob = box.encrypt(SEED, context="f")
    assert box.decrypt(bytearray(blob), context="f") == SEED
    assert box.decrypt(memoryview(blob), context="f") == SEED  # type: ignore[arg-type]


def test_associated_data_binds_a_ciphertext_to_its_context() -> None:
    box = SecretBox([key("k1")])
    blob = box.encrypt(SEED, context="factor-1")
    # A seed copied onto another row does not open there.
    for other in ("factor-2", "factor-1 ", "", "FACTOR-1"):
        with pytest.raises(SecretKeyError):
            box.decrypt(blob, context=other)
    assert box.decrypt(blob, context="factor-1") == SEED


@pytest.mark.parametrize("position", [3, 10, 15, 20, -1])
def test_tampering_is_detected(position: int) -> None:
    box = SecretBox([key("k1")])
    blob = bytearray(box.encrypt(SEED, context="f"))
    blob[position] ^= 0x01
    with pytest.raises(SecretKeyError):
        box.decrypt(bytes(blob), context="f")


def test_truncated_ciphertext_is_refused() -> None:
    box = SecretBox([key("k1")])
    blob = box.encrypt(SEED, context="f")
    for cut in (len(blob) - 1, 3 + 12 + 5, 3 + 12, 3 + 5, 3, 2, 0):
        with pytest.raises(SecretKeyError):
            box.decrypt(blob[:cut], context="f")


def test_another_key_with_the_same_id_cannot_decrypt() -> None:
    blob = SecretBox([key("k1")]).encrypt(SEED, context="f")
    with pytest.raises(SecretKeyError):
        SecretBox([key("k1")]).decrypt(blob, context="f")


def test_unknown_key_id_is_an_error() -> None:
    blob = SecretBox([key("old")]).encrypt(SEED, context="f")
    box = SecretBox([key("new")])
    with pytest.raises(SecretKeyError, match="old"):
        box.decrypt(blob, context="f")


def test_blob_without_a_key_id_separator_is_an_error() -> None:
    box = SecretBox([key("k1")])
    with pytest.raises(SecretKeyError):
        box.decrypt(b"no separator here at all, just bytes", context="f")


def test_empty_ring_is_refused() -> None:
    with pytest.raises(SecretKeyError):
        SecretBox([])
    box = SecretBox([key("k1")])
    with pytest.raises(SecretKeyError):
        box.use_keys([])
    assert box.current_id == "k1"


# --- the key ring as configured ---------------------------------------------------------------


def test_parse_key_ring() -> None:
    k1, k2 = key("k1"), key("second_key-2")
    keys = parse_key_ring(ring_text(k1, k2))
    assert keys == [k1, k2]
    # Newlines, blanks, surrounding spaces and comments are fine too (the key file format).
    text = f"# comment\n\n  {format_key(k1)}  \n{format_key(k2)}\n"
    assert parse_key_ring(text) == [k1, k2]


def test_parse_the_test_ring() -> None:
    (only,) = parse_key_ring(TEST_SECRET_KEYS)
    assert only.id == "t1"
    assert len(only.key) == 32


def test_format_key_round_trip() -> None:
    k = key("abc")
    text = format_key(k)
    assert text.startswith("abc:")
    assert base64.b64decode(text.split(":", 1)[1]) == k.key
    assert parse_key_ring(text) == [k]


GOOD = base64.b64encode(b"\x01" * 32).decode()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("  ,\n, ", "empty"),
        ("# only a comment", "empty"),
        (GOOD, "ID:BASE64"),  # no id
        (f":{GOOD}", "ID:BASE64"),  # empty id
        (f"bad id:{GOOD}", "ID:BASE64"),
        (f"bad.id:{GOOD}", "ID:BASE64"),
        (f"{'x' * 33}:{GOOD}", "ID:BASE64"),
        ("k1:not base64!!", "base64"),
        ("k1:QUJ", "base64"),  # bad padding
        (f"k1:{base64.b64encode(b'x' * 16).decode()}", "32 bytes"),
        (f"k1:{base64.b64encode(b'x' * 33).decode()}", "32 bytes"),
        ("k1:", "32 bytes"),
        (f"k1:{GOOD},k1:{GOOD}", "twice"),
    ],
)
def test_key_ring_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(SecretKeyError, match=needle):
        parse_key_ring(text)


def test_parse_errors_never_echo_the_key_material() -> None:
    secret_part = base64.b64encode(b"s" * 16).decode()
    with pytest.raises(SecretKeyError) as caught:
        parse_key_ring(f"k1:{secret_part}")
    assert secret_part not in str(caught.value)


def test_new_key_ids_do_not_collide() -> None:
    first = new_key([])
    assert first.id == "k1"
    assert len(first.key) == 32
    second = new_key([first])
    assert second.id == "k2"
    assert second.key != first.key
    # Gaps and foreign names are skipped over, never reused.
    taken = [SecretKey("k2", b"\x00" * 32), SecretKey("k3", b"\x00" * 32)]
    assert new_key(taken).id not in {"k2", "k3"}


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_old_ciphertext_decrypts_after_a_new_key_is_put_first() -> None:
    old, fresh = key("k1"), key("k2")
    before = SecretBox([old])
    blob = before.encrypt(SEED, context="factor-1")

    after = SecretBox([fresh, old])
    assert after.current_id == "k2"
    assert after.decrypt(blob, context="factor-1") == SEED
    reencrypted = after.encrypt(after.decrypt(blob, context="factor-1"), context="factor-1")
    assert SecretBox.key_id_of(reencrypted) == "k2"
    assert after.decrypt(reencrypted, context="factor-1") == SEED
    # The old ring alone cannot read what the new key wrote.
    with pytest.raises(SecretKeyError):
        before.decrypt(reencrypted, context="factor-1")
    # Once the old key is dropped, only re-encrypted secrets still open.
    final = SecretBox([fresh])
    assert final.decrypt(reencrypted, context="factor-1") == SEED
    with pytest.raises(SecretKeyError):
        final.decrypt(blob, context="factor-1")


def test_use_keys_switches_the_encrypting_key_in_place() -> None:
    old, fresh = key("k1"), key("k2")
    box = SecretBox([old])
    blob = box.encrypt(SEED, context="c")
    box.use_keys([fresh, old])
    assert box.current_id == "k2"
    assert SecretBox.key_id_of(box.encrypt(SEED, context="c")) == "k2"
    assert box.decrypt(blob, context="c") == SEED


def test_reload_callback_is_used_for_an_unknown_key_id() -> None:
    old, fresh = key("k1"), key("k2")
    calls: list[int] = []

    def reload() -> list[SecretKey]:
        calls.append(1)
        return [fresh, old]

    box = SecretBox([old], reload=reload)
    assert box.decrypt(box.encrypt(SEED, context="c"), context="c") == SEED
    assert calls == [], "a known key id needs no reload"
    blob = SecretBox([fresh]).encrypt(SEED, context="c")
    assert box.decrypt(blob, context="c") == SEED
    assert calls == [1]
    assert box.current_id == "k2"  # new secrets go under the rotated key from now on


def test_reload_that_still_lacks_the_key_is_an_error() -> None:
    old = key("k1")
    box = SecretBox([old], reload=lambda: [old])
    blob = SecretBox([key("k9")]).encrypt(SEED, context="c")
    with pytest.raises(SecretKeyError):
        box.decrypt(blob, context="c")
    assert box.current_id == "k1"


# --- the zero-configuration key file ----------------------------------------------------------


def test_configured_ring_writes_no_file(tmp_path: Path) -> None:
    k = key("env1")
    keys, path = load_key_ring(ring_text(k), str(tmp_path / "data"))
    assert keys == [k]
    assert path is None
    assert not (tmp_path / "data").exists()


def test_configured_ring_errors_are_raised(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError):
        load_key_ring("k1:short", str(tmp_path))
    with pytest.raises(SecretKeyError):
        open_secretbox("nonsense", str(tmp_path))


def test_key_file_is_generated_once_and_reused(tmp_path: Path, permissive_umask: None) -> None:
    data_dir = tmp_path / "data" / "nested"
    keys, path = load_key_ring(None, str(data_dir))
    assert path == key_file_path(str(data_dir)) == data_dir / KEY_FILE_NAME
    assert path.exists()
    assert len(keys) == 1 and len(keys[0].key) == 32
    assert mode_of(path) == 0o600
    again, same_path = load_key_ring(None, str(data_dir))
    assert again == keys and same_path == path
    # The file is plain "ID:BASE64" lines under a comment.
    assert parse_key_ring(path.read_text()) == keys
    assert not list(data_dir.glob("*.tmp"))


def test_write_key_file_is_0600_even_over_a_readable_file(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("old contents\n")
    path.chmod(0o644)
    keys = [key("k2"), key("k1")]
    write_key_file(path, keys)
    assert mode_of(path) == 0o600
    assert parse_key_ring(path.read_text()) == keys
    assert not path.with_name(path.name + ".tmp").exists()


def test_open_secretbox_with_a_configured_ring(tmp_path: Path) -> None:
    k = key("env1")
    box = open_secretbox(ring_text(k), str(tmp_path))
    assert box.current_id == "env1"
    assert list(tmp_path.iterdir()) == []


def test_reload_picks_up_a_rotated_key_file(tmp_path: Path) -> None:
    """Another process (``cloudmfa rotate-secret-key``) rotates the key file while this one runs:
    a seed it re-encrypted under the new key still opens here, and new seeds use the new key."""
    running = open_secretbox(None, str(tmp_path))
    original_id = running.current_id
    old_blob = running.encrypt(SEED, context="factor-1")

    path = key_file_path(str(tmp_path))
    ring = parse_key_ring(path.read_text())
    fresh = new_key(ring)
    write_key_file(path, [fresh, *ring])
    rotated = open_secretbox(None, str(tmp_path))
    assert rotated.current_id == fresh.id != original_id
    new_blob = rotated.encrypt(SEED, context="factor-1")

    assert running.decrypt(new_blob, context="factor-1") == SEED
    assert running.current_id == fresh.id
    assert running.decrypt(old_blob, context="factor-1") == SEED
    assert SecretBox.key_id_of(running.encrypt(SEED, context="x")) == fresh.id


def test_configured_ring_has_no_reload(tmp_path: Path) -> None:
    box = open_secretbox(ring_text(key("env1")), str(tmp_path))
    blob = SecretBox([key("env2")]).encrypt(SEED, context="c")
    with pytest.raises(SecretKeyError):
        box.decrypt(blob, context="c")
