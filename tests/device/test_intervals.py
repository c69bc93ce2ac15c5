"""interval_union: covered time of overlapping intervals, as device busy time needs it."""

from inferaudit_sdk.instrumentation._intervals import interval_union


def test_overlaps_count_once_and_gaps_not_at_all():
    assert interval_union([(0, 10), (5, 15), (20, 30)]) == (25, 0, 30)


def test_order_and_nesting_do_not_matter():
    assert interval_union([(20, 30), (2, 3), (0, 10)]) == (20, 0, 30)


def test_reversed_intervals_are_ignored_and_empty_input_is_none():
    assert interval_union([(5, 1), (1.5, 2.0)]) == (0.5, 1.5, 2.0)
    assert interval_union([]) is None
    assert interval_union([(3, 2)]) is None


def test_zero_length_interval_marks_first_and_last():
    assert interval_union([(4, 4), (6, 9)]) == (3, 4, 9)
