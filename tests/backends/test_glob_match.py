"""`glob_match` follows Redis's `stringmatchlen` (PSUBSCRIBE, KEYS) case by case.

The quirky rows were checked against a real redis-server 7.0.
"""

from __future__ import annotations

import pytest

from sidecar.backends.pubsub import compile_glob, glob_match

CASES = [
    # literals and ?
    ("hello", "hello", True),
    ("hello", "hell", False),
    ("hello", "Hello", False),
    ("h?llo", "hallo", True),
    ("h?llo", "hllo", False),
    ("???", "abc", True),
    # *
    ("*", "x", True),
    ("*", "a.b/c:d", True),
    ("a*", "a", True),
    ("*a", "ba", True),
    ("*a", "ab", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "a__b__c", True),
    ("a*b*c", "a__c__b", False),
    ("a**b", "ab", True),
    ("*.eu", "orders.eu", True),
    ("line*", "line\nbreak", True),
    # the empty channel matches only the empty pattern, not even "*"
    ("*", "", False),
    ("", "", True),
    # classes
    ("[abc]", "b", True),
    ("[abc]", "d", False),
    ("[^abc]", "d", True),
    ("[^abc]", "a", False),
    ("[a-c]", "b", True),
    ("[a-c]", "d", False),
    ("[c-a]", "b", True),  # reversed range ends are swapped
    ("[a-cx]", "x", True),
    ("[\\]]", "]", True),
    ("[\\-]", "-", True),
    ("[]", "a", False),  # "]" right after "[" closes an empty class: matches nothing
    ("[^]", "a", True),  # negated empty class: any one byte
    ("[ab", "a", True),  # unterminated: the class ends with the pattern
    ("[", "[", False),
    ("[a-]", "_", True),  # "a-]" is the range "]".."a"; the class is then unterminated
    # escapes
    ("\\*", "*", True),
    ("\\*", "x", False),
    ("\\?", "?", True),
    ("\\[a]", "[a]", True),
    ("a\\", "a\\", True),  # a trailing lone backslash is literal
    # bytes, as Redis: "?" is one UTF-8 byte
    ("?", "é", False),
    ("??", "é", True),
    ("é*", "été", True),
]


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    CASES,
    ids=[f"{p!r}-{c!r}" for p, c, _ in CASES],
)
def test_glob_match_follows_redis(pattern: str, channel: str, expected: bool) -> None:
    assert glob_match(pattern, channel) is expected


def test_many_stars_do_not_backtrack_catastrophically() -> None:
    assert glob_match("*a" * 20 + "*b", "a" * 2_000) is False


def test_compiled_patterns_are_cached() -> None:
    assert compile_glob("orders.*") is compile_glob("orders.*")
