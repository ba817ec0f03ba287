"""The bounded retry (`nas.errors.draw_bounded`): the first hit, or a warning with the closest draw."""

from __future__ import annotations

import pytest

from nas.errors import RetryWarning, draw_bounded


def test_draw_bounded_returns_the_first_hit_or_warns_with_the_closest():
    draws = iter([5.0, 3.0, 1.0, 3.0])
    assert draw_bounded(lambda: next(draws), lambda x: max(x - 2.0, 0.0), tries=4, what="x", constraint="c",
                        fallback="f") == (1.0, True)
    draws = iter([5.0, 3.0, 4.0, 3.0])
    with pytest.warns(RetryWarning, match="^none of 4 draws of a number was at most 2; the closest instead$"):
        assert draw_bounded(lambda: next(draws), lambda x: max(x - 2.0, 0.0), tries=4, what="a number",
                            constraint="was at most 2", fallback="the closest instead") == (3.0, False)
