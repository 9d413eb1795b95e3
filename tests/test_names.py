from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiresp import UnsafeNameError
from multiresp._names import (
    check_header_value,
    check_name,
    check_portable,
    content_disposition,
    parse_content_disposition,
)

UNSAFE = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("C:evil", "drive"),
    ("c:/x", "drive"),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("a\nb", "control"),
    ("a//b", "segment"),
    ("./a", "segment"),
    ("a/./b", "segment"),
    ("a/../b", "segment"),
    ("..", "segment"),
    ("../x", "segment"),
    ("a//", "segment"),
    ("/", "absolute"),
]


@pytest.mark.parametrize(("name", "rule"), UNSAFE)
def test_unsafe_names_are_refused_with_the_rule(name: str, rule: str) -> None:
    with pytest.raises(UnsafeNameError, match=rule) as info:
        check_name(name)
    assert info.value.entry == name


@pytest.mark.parametrize(
    "name", ["a", "a/b", "dir/", "a/b/c.txt", "résumé.pdf", "日本/語.txt", "..a"]
)
def test_safe_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_portable_rules() -> None:
    with pytest.raises(UnsafeNameError, match="over the limit"):
        check_portable("a" * 20, max_length=10)
    with pytest.raises(UnsafeNameError, match="255 bytes"):
        check_portable("é" * 200)
    with pytest.raises(UnsafeNameError, match="reserved"):
        check_portable("dir/CON.txt", windows=True)
    with pytest.raises(UnsafeNameError, match="Windows"):
        check_portable("a?b", windows=True)
    assert check_portable("dir/CON.txt", windows=False) == "dir/CON.txt"


def test_content_disposition_ascii_and_unicode() -> None:
    assert content_disposition("a.zip") == 'attachment; filename="a.zip"'
    value = content_disposition("résumé.zip")
    assert value == "attachment; filename=\"resume.zip\"; filename*=UTF-8''r%C3%A9sum%C3%A9.zip"
    assert value.isascii()


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x", "a\nb", "a\x00"])
def test_header_values_refuse_cr_lf_nul(bad: str) -> None:
    with pytest.raises(UnsafeNameError, match="CR, LF and NUL"):
        content_disposition(bad)
    with pytest.raises(UnsafeNameError):
        check_header_value(bad, "value")


def test_parse_prefers_filename_star() -> None:
    value = "attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC.txt"
    assert parse_content_disposition(value) == ("attachment", "€.txt")
    assert parse_content_disposition('form-data; name="f"; filename="a\\"b"') == (
        "form-data",
        'a"b',
    )
    assert parse_content_disposition("inline") == ("inline", None)


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_content_disposition_round_trips(name: str) -> None:
    kind, parsed = parse_content_disposition(content_disposition(name))
    assert (kind, parsed) == ("attachment", name)


@given(
    st.text(st.sampled_from(["a", "é", ".", "/", "\\", ":", "C", "\x00", "\n", " "]), max_size=8)
    | st.text(max_size=12)
)
def test_fast_path_agrees_with_the_rules(name: str) -> None:
    """check_name's two-regex fast path accepts only what the rule-by-rule path accepts."""
    import re

    import multiresp._names as names

    def verdict() -> bool:
        try:
            check_name(name)
        except UnsafeNameError:
            return False
        return True

    fast = verdict()
    original = names._PLAIN
    names._PLAIN = re.compile(r"(?!)")  # never matches: every name takes the slow path
    try:
        assert verdict() == fast
    finally:
        names._PLAIN = original


def test_fallback_is_never_blank_and_blanks_are_kept_exactly() -> None:
    assert content_disposition("¯") == "attachment; filename=\"_\"; filename*=UTF-8''%C2%AF"
    assert content_disposition(" a.txt") == (
        "attachment; filename=\"a.txt\"; filename*=UTF-8''%20a.txt"
    )
