import pytest
from hypothesis import given
from hypothesis import strategies as st

from replichat.chat.names import (
    MAX_NAME_CHARS,
    MAX_PATTERN_CHARS,
    MAX_TEXT_BYTES,
    normalize_name,
    validate_text,
)
from replichat.errors import ChatError, Code


def refusal(call, value) -> ChatError:
    with pytest.raises(ChatError) as info:
        call(value)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "\n" not in info.value.message
    return info.value


def test_limits_are_the_documented_ones():
    assert (MAX_NAME_CHARS, MAX_TEXT_BYTES, MAX_PATTERN_CHARS) == (32, 4096, 256)


@pytest.mark.parametrize(
    "name",
    ["alice", "user2", "a.b-c_d", "Zoë", "日本語", "Ελένη", "x" * MAX_NAME_CHARS, "."],
)
def test_valid_names_are_kept(name):
    assert normalize_name(name) == name


def test_names_are_nfc_normalised():
    composed = "Zo\u00eb"
    decomposed = "Zoe\u0308"
    assert decomposed != composed
    assert normalize_name(decomposed) == composed


def test_length_is_counted_after_normalisation():
    # 32 "é" typed as e + combining accent: 64 code points, 32 characters once composed.
    assert normalize_name("e\u0301" * MAX_NAME_CHARS) == "\u00e9" * MAX_NAME_CHARS


def test_empty_name_is_refused():
    assert "empty" in refusal(normalize_name, "").message


def test_too_long_name_says_the_limit():
    err = refusal(normalize_name, "x" * (MAX_NAME_CHARS + 1))
    assert "33 characters" in err.message and "at most 32" in err.message


@pytest.mark.parametrize(
    "name, shown",
    [
        ("a b", "a space"),
        ("a,b", "a comma"),
        ("a\nb", "'\\n'"),
        ("a\x00b", "'\\x00'"),
        ("a\tb", "'\\t'"),
        ("a/b", "'/'"),
        ("a@b", "'@'"),
        ("zero\u200bwidth", "U+200B"),
        ("smile\U0001F600", "U+1F600"),
        ("lone\ud800", "U+D800"),
        ("accent\u0301", "U+0301"),  # a combining mark with nothing to combine with
    ],
)
def test_bad_characters_are_refused_and_named(name, shown):
    err = refusal(normalize_name, name)
    assert shown in err.message
    # The bad name is quoted escaped, so control characters cannot reach a terminal.
    assert repr(name) in err.message


def test_long_bad_names_are_quoted_shortened():
    err = refusal(normalize_name, "a b" * 1000)
    assert len(err.message) < 200


@given(st.text(max_size=40))
def test_normalised_names_are_stable_and_safe(raw):
    try:
        name = normalize_name(raw)
    except ChatError as err:
        assert err.code is Code.INVALID_ARGUMENT
        return
    assert normalize_name(name) == name
    assert 1 <= len(name) <= MAX_NAME_CHARS
    assert not any(char.isspace() or char == "," for char in name)


@pytest.mark.parametrize(
    "text",
    ["hello", "line one\nline two", "a,b c", "x" * MAX_TEXT_BYTES, "€" * 1365 + "x"],
)
def test_valid_text_is_returned_unchanged(text):
    assert validate_text(text) == text


def test_empty_text_is_refused():
    assert "empty" in refusal(validate_text, "").message


def test_nul_is_refused():
    assert "NUL" in refusal(validate_text, "a\x00b").message


@pytest.mark.parametrize("text", ["x" * (MAX_TEXT_BYTES + 1), "é" * 2049, "x" * 10_000_000])
def test_text_over_the_byte_limit_is_refused(text):
    err = refusal(validate_text, text)
    assert "4096" in err.message


def test_limit_is_bytes_not_characters():
    # 2049 characters, 4098 bytes: under a character limit, over the byte limit.
    refusal(validate_text, "é" * 2049)
    assert validate_text("é" * 2048) == "é" * 2048


def test_lone_surrogate_text_is_refused():
    assert "Unicode" in refusal(validate_text, "bad \udcff").message
