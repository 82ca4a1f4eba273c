"""Validation of what users type: user names and message text.

These rules run twice: on the replica a client talks to (for a quick, clear error) and again
inside the state machine's apply (a forwarded command may come from anywhere). Both must give
the same answer on every replica and Python version, so they depend only on the input string
and on `unicodedata` (whose tables are what make Python 3.8 and 3.11 agree or not: only names
using characters added to Unicode after 3.8's tables are at risk, see `normalize_name`).
"""
import unicodedata

from replichat.errors import ChatError, Code

MAX_NAME_CHARS = 32
MAX_TEXT_BYTES = 4096
MAX_PATTERN_CHARS = 256

# Punctuation allowed in names besides letters and digits: none of them is whitespace or a
# comma, which the seed wire protocol uses as separators.
_NAME_PUNCTUATION = frozenset("_-.")

# How much of a bad input an error message quotes: enough to recognise it, short enough to
# keep the message on one line of a terminal.
_QUOTE_CHARS = 40


def quote(value: str) -> str:
    """Quote user input for an error message: escaped (no raw control characters or line
    breaks can reach a terminal) and shortened."""
    if len(value) <= _QUOTE_CHARS:
        return repr(value)
    return repr(value[:_QUOTE_CHARS]) + "..."


def normalize_name(raw: str) -> str:
    """Return the canonical form of a user name, or raise ChatError(INVALID_ARGUMENT).

    NFC first, so that names a person cannot tell apart ("é" typed as one code point or as
    "e" plus a combining accent) are the same user. Letters and digits are judged by
    `str.isalnum`, which uses the interpreter's Unicode tables: a character too new for an
    older Python is rejected there, so a cluster must not mix Python versions whose tables
    disagree on names that are actually used.
    """
    name = unicodedata.normalize("NFC", raw)
    if not name:
        raise ChatError(Code.INVALID_ARGUMENT, "invalid user name: it must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ChatError(
            Code.INVALID_ARGUMENT,
            f"invalid user name {quote(raw)}: {len(name)} characters, at most {MAX_NAME_CHARS}",
        )
    for char in name:
        if not (char.isalnum() or char in _NAME_PUNCTUATION):
            raise ChatError(
                Code.INVALID_ARGUMENT,
                f"invalid user name {quote(raw)}: contains {_describe(char)};"
                " use letters, digits, '_', '-' or '.'",
            )
    return name


def _describe(char: str) -> str:
    """Name a refused character so that invisible ones (spaces, controls) are identifiable."""
    if char == " ":
        return "a space"
    if char == ",":
        return "a comma"
    return f"{char!r} (U+{ord(char):04X})"


def validate_text(text: str) -> str:
    """Return `text` unchanged if it may be sent as a message, else raise ChatError.

    The limit is in UTF-8 bytes, not characters, because bytes are what the log, the disk and
    the seed's 1024-byte frames carry. NUL is refused because the seed wire protocol pads
    with it, so a NUL in text could not round-trip.
    """
    if not text:
        raise ChatError(Code.INVALID_ARGUMENT, "invalid message: the text must not be empty")
    if "\x00" in text:
        raise ChatError(Code.INVALID_ARGUMENT, "invalid message: the text contains a NUL character")
    if len(text) > MAX_TEXT_BYTES:
        # Every character is at least one byte: no need to encode a huge string to refuse it.
        raise ChatError(Code.INVALID_ARGUMENT, _too_long_message(f"more than {MAX_TEXT_BYTES}"))
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # Only lone surrogates fail to encode; they never come off the wire but can be
        # produced by Python callers (e.g. surrogateescape'd stdin).
        raise ChatError(
            Code.INVALID_ARGUMENT, "invalid message: the text is not valid Unicode (lone surrogate)"
        ) from None
    if size > MAX_TEXT_BYTES:
        raise ChatError(Code.INVALID_ARGUMENT, _too_long_message(str(size)))
    return text


def _too_long_message(size: str) -> str:
    return f"invalid message: the text is {size} bytes long in UTF-8, at most {MAX_TEXT_BYTES}"


# Characters that look like a Latin letter or digit once a name is NFKC-normalised and
# case-folded, mapped to the one they imitate: a small, fixed subset of the confusables
# of Unicode TR39 (UTS #39, "confusables.txt"), chosen for what names may contain (letters
# and digits). Fixed here rather than taken from a package because apply must give the same
# answer on every replica and Python version forever: changing this table changes which
# names may be created, so it may only grow with a new state schema.
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y",
    "х": "x", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ь": "b", "ᴦ": "r",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Armenian
    "ա": "w", "հ": "h", "ո": "n", "ս": "u", "օ": "o",
    # Latin lookalikes of other Latin letters, and digits
    "ı": "i", "ɩ": "i", "ɑ": "a", "ɡ": "g", "ʏ": "y", "ᴏ": "o", "ꞵ": "b", "ß": "ss",
    "0": "o", "1": "l", "|": "l",
}
# Letter pairs that read as one letter (also from UTS #39).
_LOOKALIKE_PAIRS = (("rn", "m"), ("vv", "w"))
_LOOKALIKE_TABLE = str.maketrans(_LOOKALIKES)


def lookalike_key(name: str) -> str:
    """What a name looks like: two names with the same key cannot both exist.

    NFKC folds compatibility forms (fullwidth `ａdmin`, the ligature in `ﬁle`), case-folding
    makes `Admin` and `admin` one, and the table above maps letters of other scripts that
    look Latin (Cyrillic `аdmin`) and look-alike digits (`adm1n`) to what they imitate.
    """
    key = unicodedata.normalize("NFKC", name).casefold().translate(_LOOKALIKE_TABLE)
    for pair, letter in _LOOKALIKE_PAIRS:
        key = key.replace(pair, letter)
    return key

