"""errors.py names every code the API answers with, the framework's refusals included."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmfa.errors import error_classes, error_codes, for_http_status


@pytest.mark.parametrize(
    ("status", "code", "answered"),
    [
        (400, "validation_error", 422),  # a body the framework could not parse
        (401, "invalid_token", 401),
        (404, "not_found", 404),
        (405, "method_not_allowed", 405),
        (413, "payload_too_large", 413),
        (415, "validation_error", 422),
        (500, "internal_error", 500),
    ],
)
def test_framework_statuses_map_to_stable_codes(status: int, code: str, answered: int) -> None:
    error = for_http_status(status)()
    assert (error.code, error.status) == (code, answered)


def test_each_code_has_one_status_and_title() -> None:
    for code in error_codes():
        named = {(cls.status, cls.title) for cls in error_classes() if cls.code == code}
        assert len(named) == 1, (code, named)


def test_the_api_docs_list_every_code_with_its_status() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    for cls in error_classes():
        assert f"| `{cls.code}` | {cls.status} |" in docs, cls.code
