from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiresp import ProtocolError, UnsafeNameError
from multiresp._names import (
    check_header_value,
    check_name,
    check_portable,
    content_disposition,
    parse_content_disposition,
    parse_header_params,
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
    st.text(
        st.sampled_from(
            ["a", "é", ".", "/", "\\", ":", "C", "\x00", "\n", " ", "\x85", "\u202e", "\ud800"]
        ),
        max_size=8,
    )
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


# -- issue 9, item 14: one name check refuses over-long names, C1, bidi and device names ---------

C1_AND_BIDI = [chr(c) for c in range(0x80, 0xA0)] + [
    chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
]


@pytest.mark.parametrize("char", C1_AND_BIDI, ids=lambda c: f"U+{ord(c):04X}")
def test_c1_controls_and_bidi_overrides_are_refused(char: str) -> None:
    rule = "C1" if ord(char) < 0xA0 else "bidirectional"
    for name in (f"a{char}b.txt", f"dir/{char}", f"{char}/x"):
        with pytest.raises(UnsafeNameError, match=rule) as info:
            check_name(name)
        assert info.value.entry == name
        assert char not in str(info.value)  # the message quotes it escaped, never raw


@pytest.mark.parametrize("char", ["\u00a0", "\u200e", "\u2065", "\u206a", "\u202f", "é", "名"])
def test_neighbours_of_the_refused_ranges_pass(char: str) -> None:
    assert check_name(f"a{char}b") == f"a{char}b"


def test_names_over_65535_bytes_are_refused_by_the_name_check() -> None:
    assert check_name("a" * 0xFFFF) == "a" * 0xFFFF
    assert check_name("é" * (0xFFFF // 2)) == "é" * (0xFFFF // 2)
    for name in ("a" * 0x10000, "é" * 0x8000, "d/" + "名" * 0x5555):
        with pytest.raises(UnsafeNameError, match="65535") as info:
            check_name(name)
        assert len(str(info.value)) < 200  # the message shows a prefix, not the whole name


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(UnsafeNameError, match="surrogate"):
        check_name("a\udcff.txt")


@given(st.text(st.characters(codec="utf-8"), max_size=30), st.sampled_from(C1_AND_BIDI))
def test_any_name_holding_c1_or_bidi_is_refused(text: str, char: str) -> None:
    cut = len(text) // 2
    with pytest.raises(UnsafeNameError):
        check_name(text[:cut] + char + text[cut:])


@given(st.integers(0xFFF0, 0x10010), st.sampled_from(["a", "é", "名", "😀"]))
def test_name_byte_length_bound_is_exact(count: int, char: str) -> None:
    name = char * (count // len(char.encode()))
    fits = len(name.encode()) <= 0xFFFF
    try:
        check_name(name)
    except UnsafeNameError:
        assert not fits
    else:
        assert fits


DEVICES = ["COM0", "LPT0", "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³", "CONIN$", "CONOUT$"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ["{}", "{}.txt", "dir/{}.tar.gz", "{} .log"])
def test_more_windows_device_names_are_not_portable(device: str, shape: str) -> None:
    for spelled in (device, device.lower(), device.capitalize()):
        name = shape.format(spelled)
        with pytest.raises(UnsafeNameError, match="reserved device name"):
            check_portable(name, windows=True)
        assert check_portable(name, windows=False) == name


@pytest.mark.parametrize("name", ["COM10", "LPT", "CONIN", "COM⁴", "CONOUT$x", "xCOM1"])
def test_near_device_names_stay_portable(name: str) -> None:
    assert check_portable(name, windows=True) == name


def test_server_side_refuses_through_the_same_check() -> None:
    from multiresp import Entry

    for name in ("a\x9bb", "x\u202etxt.exe", "a" * 0x10000):
        with pytest.raises(UnsafeNameError):
            Entry.from_bytes(b"x", name)


# -- RFC 8187 extended values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "attachment; filename*=undefined''%41",
        "attachment; filename*=idna''x",
        "attachment; filename*=punycode''abc-",
        "attachment; filename*=rot13''abc",
        "attachment; filename*=utf-16''%41%00",
        "attachment; filename*=UTF-8''%FF",
        "attachment; filename*=no-quotes",
        "attachment; filename=\"ok.txt\"; filename*=base64''QQ==",
    ],
)
def test_bad_extended_filenames_are_protocol_errors(value: str) -> None:
    with pytest.raises(ProtocolError, match="filename\\*"):
        parse_content_disposition(value)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("attachment; filename*=utf-8''%E2%82%AC.txt", "€.txt"),
        ("attachment; filename*=ISO-8859-1'en'caf%E9", "café"),
        ("attachment; filename*=''plain", "plain"),
    ],
)
def test_the_two_rfc_8187_charsets_decode(value: str, name: str) -> None:
    assert parse_content_disposition(value) == ("attachment", name)


@given(st.text(max_size=60))
def test_lenient_parameter_parsing_never_raises(text: str) -> None:
    parse_header_params("a/b; q*=" + text)
    parse_header_params(text)


def test_the_zip_writer_refuses_a_name_its_header_cannot_hold() -> None:
    from multiresp._zipwriter import ZipEntryInfo, ZipWriter

    with pytest.raises(UnsafeNameError, match="65535"):  # was struct.error
        ZipWriter().start_entry(ZipEntryInfo(name="n" * 0x10000, size=0), b"")


_KINDS = st.sampled_from(["form-data", "Form-Data ", " attachment", "inline", "", 'a"b', "x,y"])
_SEPARATORS = st.sampled_from([";", "; ", ";\t", ";  ", " ;", ";\r\n", "; \t "])
_VALUES = st.text(alphabet=st.sampled_from("ab€ ;=\"\\\t*'%."), max_size=12)
_PARAM_NAMES = st.sampled_from(["name", "filename", "Name", "filename*", "name ", "x"])
_TAILS = st.sampled_from(["", " ", ";", '; x="y"', "; filename*=UTF-8''%E2%82%AC", "junk", '"'])


@given(
    _KINDS,
    st.lists(st.tuples(_SEPARATORS, _PARAM_NAMES, _VALUES, st.booleans()), max_size=3),
    _TAILS,
)
def test_the_fast_path_reads_headers_as_the_full_parser_does(
    kind: str, params: list[tuple[str, str, str, bool]], tail: str
) -> None:
    from multiresp._names import _parse_params

    value = kind + "".join(
        f'{sep}{key}="{text}"' if quoted else f"{sep}{key}={text}"
        for sep, key, text, quoted in params
    )
    for candidate in (value, value + tail):
        assert parse_header_params(candidate) == _parse_params(candidate, strict=False)
        try:
            expected = _parse_params(candidate, strict=True)
        except ProtocolError:
            with pytest.raises(ProtocolError):
                parse_header_params(candidate, strict=True)
        else:
            assert parse_header_params(candidate, strict=True) == expected


@pytest.mark.parametrize(
    "value",
    [
        'form-data; name="files"; filename="a.txt"',
        'form-data; name="files"; filename="photos/2026/€ a;b.jpg"',
        'form-data; name="note"',
        'form-data;name="files";filename=""',
        'attachment; name="x"; filename="y"',
    ],
)
def test_common_dispositions_take_the_fast_path(value: str) -> None:
    from multiresp._names import _SIMPLE_PARAMS, _parse_params

    assert _SIMPLE_PARAMS.fullmatch(value) is not None
    assert parse_header_params(value) == _parse_params(value, strict=True)
