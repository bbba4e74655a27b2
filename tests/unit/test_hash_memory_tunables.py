"""`serve` asks glibc to hand argon2id's buffer back after each hash, in its workers only, only
where the kernel offers transparent huge pages (without them it would make hashing dearer), and
never over an operator's own allocator settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloudmfa.cli import serve


@pytest.fixture
def thp_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mode = tmp_path / "enabled"
    monkeypatch.setattr(serve, "TRANSPARENT_HUGEPAGE_MODE", str(mode))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    return mode


@pytest.mark.parametrize("offered", ["always [madvise] never", "[always] madvise never"])
def test_set_where_huge_pages_are_offered(thp_mode: Path, offered: str) -> None:
    thp_mode.write_text(offered + "\n")
    serve._return_hash_memory_in_workers()
    assert os.environ["GLIBC_TUNABLES"] == serve.HASH_MEMORY_TUNABLES


def test_not_set_without_huge_pages(thp_mode: Path) -> None:
    thp_mode.write_text("always madvise [never]\n")
    serve._return_hash_memory_in_workers()
    assert "GLIBC_TUNABLES" not in os.environ


def test_not_set_when_the_kernel_does_not_say(thp_mode: Path) -> None:
    serve._return_hash_memory_in_workers()  # the file does not exist

    assert "GLIBC_TUNABLES" not in os.environ


def test_an_operators_own_tunables_are_kept(
    thp_mode: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thp_mode.write_text("always [madvise] never\n")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    serve._return_hash_memory_in_workers()
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
