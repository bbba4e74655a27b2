"""store/users.search reads the addresses that start with a query as one range of the email
index: from the query to ``least_string_after_prefix(query)``, in code point order (which is
how Python compares strings). The range must hold every string that starts with the query and
nothing else."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from cloudmfa.store.users import least_string_after_prefix

# Few distinct characters, among them the ones where the bound carries or skips, so that
# hypothesis often draws strings that share a beginning and strings that sit beside the bound.
EDGES = st.sampled_from(["a", "b", "-", ".", "\ud7ff", "\ue000", chr(sys.maxunicode), "é"])
TEXT = st.lists(EDGES, max_size=5).map("".join)


def _in_range(prefix: str, text: str) -> bool:
    bound = least_string_after_prefix(prefix)
    return prefix <= text and (bound is None or text < bound)


@given(prefix=TEXT.filter(bool), text=TEXT)
def test_the_range_holds_exactly_the_strings_that_start_with_the_prefix(
    prefix: str, text: str
) -> None:
    assert _in_range(prefix, text) == text.startswith(prefix)
    assert _in_range(prefix, prefix + text)


@given(prefix=st.text(min_size=1), text=st.text())
def test_any_text(prefix: str, text: str) -> None:
    assert _in_range(prefix, text) == text.startswith(prefix)
    assert _in_range(prefix, prefix + text)


def test_the_bound_steps_the_last_character_carrying_past_the_last_code_point() -> None:
    assert least_string_after_prefix("bench-09") == "bench-0:"
    assert least_string_after_prefix("a" + chr(sys.maxunicode)) == "b"
    assert least_string_after_prefix("\ud7ff") == "\ue000"  # no surrogate in any text
    assert least_string_after_prefix(chr(sys.maxunicode) * 2) is None
    assert least_string_after_prefix("") is None
