"""Time-ordered row ids (store/ids.py): what keeps a sign-in's inserts on an index's last pages."""

from __future__ import annotations

import uuid

from cloudmfa.store.ids import time_ordered_id


def test_ids_made_one_after_another_sort_in_that_order_as_text() -> None:
    # As text, since the columns are strings: a B-tree on them sorts the same way.
    made = [time_ordered_id() for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_an_id_is_a_version_7_uuid_with_random_bits_after_the_time() -> None:
    ids = [uuid.UUID(time_ordered_id()) for _ in range(200)]
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    # The low 62 bits are random: 200 ids made within a few milliseconds share none of them.
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == len(ids)
