"""The docs cannot drift from the code unnoticed: every `CLOUDMFA_…` variable they name is a
setting, every error code they name (as `<status> \\`code\\``) is one errors.py answers with that
status, and every link stays inside the repository and finds its file and heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudmfa.config import Settings
from cloudmfa.errors import error_classes

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SETTINGS = {"CLOUDMFA_" + name.upper() for name in Settings.model_fields}
STATUS_OF_CODE = {cls.code: cls.status for cls in error_classes()}

# `CLOUDMFA_ARGON2_*` names a group of settings; `CLOUDMFA_LOG_LEVEL` one setting.
VARIABLE = re.compile(r"CLOUDMFA_([A-Z0-9_]*[A-Z0-9])(_\*)?")
# How the docs name an error: its status, then its code ("answers 403 `forbidden`").
STATUS_AND_CODE = re.compile(r"\b([1-5]\d\d)\s+`([a-z_]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's) gives a heading."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", _text(page), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_variable_named_is_a_setting(page: Path) -> None:
    for name, wildcard in VARIABLE.findall(_text(page)):
        variable = "CLOUDMFA_" + name
        if wildcard:
            assert any(s.startswith(variable + "_") for s in SETTINGS), f"{variable}_*"
        else:
            assert variable in SETTINGS, variable


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_error_code_named_exists_with_its_status(page: Path) -> None:
    for status, code in STATUS_AND_CODE.findall(_text(page)):
        assert code in STATUS_OF_CODE, f"{code} is not in errors.py"
        assert STATUS_OF_CODE[code] == int(status), f"{status} `{code}`"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_stay_in_the_repository_and_resolve(page: Path) -> None:
    text = _text(page)
    assert "../shared" not in text
    assert "API.md" not in text  # the project's docs stand on their own
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_relative_to(ROOT), target
        assert linked.is_file(), target
        if anchor:
            assert anchor in _anchors(linked), target


def test_the_checks_have_something_to_check() -> None:
    """The patterns above still find what the pages say, so the tests above are not vacuous."""
    text = "\n".join(_text(page) for page in PAGES)
    named_codes = {code for _, code in STATUS_AND_CODE.findall(text)}
    assert set(STATUS_OF_CODE) <= named_codes
    assert len(set(VARIABLE.findall(text))) >= len(SETTINGS) // 2
    assert len(LINK.findall(text)) >= 10
