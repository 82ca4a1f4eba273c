"""`list PATTERN`: which user names a regular expression finds, like grep.

Patterns come from users, and a replica serves them on the same event loop that sends Raft
heartbeats. Python's `re` backtracks: `(a+)+$` against a 30-letter name takes minutes, long
enough for followers to depose a healthy leader. RE2 (google-re2) runs in time linear in the
input instead, and refuses the features that need backtracking (backreferences, look-around)
rather than falling back to a backtracking engine. That refusal is a feature here: it must
reach the user as a clear error, never as a silent slow path.

Linear is not cheap, though: `(.*){1000}` compiles to a 9,000-instruction program whose DFA
does not fit RE2's memory budget, and RE2 then falls back to its NFA at about 1 ms per name
(two minutes for 10^5 users). So a pattern is also refused when its program has more than
MAX_PROGRAM_SIZE instructions, and `scan` (which the replica runs on a worker thread, never
on its event loop) gives up after a time budget with a clear error. Each single match is
short (well under 20 ms even for the worst pattern allowed), so the worker thread never holds
the GIL long enough to stall the event loop noticeably; bench/list_stall.py measures it.
"""
import re
import time
import unicodedata
from typing import Callable, Iterable, List

import re2

from replichat.chat.names import MAX_PATTERN_CHARS, quote
from replichat.errors import ChatError, Code

# Built once: the options object is part of re2's compiled-pattern cache key.
_OPTIONS = re2.Options()
# The default logs every refused pattern to stderr, i.e. lets any client write to the
# replica's log; the refusal reaches the client as an error instead.
_OPTIONS.log_errors = False
# We only ask whether a name matches, never for groups: without captures RE2 can answer with
# its DFA alone.
_OPTIONS.never_capture = True
# re2 caches up to 128 compiled patterns, each allowed max_mem (8 MiB by default) for its
# program and DFA: a client cycling through patterns could pin 1 GiB. 2 MiB still fits
# anything that can match a 32-character name; bigger patterns are refused as too large.
_OPTIONS.max_mem = 2 << 20
# Instructions in a compiled program. Anything useful against a 32-character name is far
# smaller (`\w{32}` is 100, `(.*){100}` is 903); `(.*){1000}` is 9003.
MAX_PROGRAM_SIZE = 1000
# How long one `list` may spend matching before it is refused.
SCAN_BUDGET_S = 2.0
# Names matched between two looks at the clock.
_CLOCK_EVERY = 32

# RE2's parse errors that mean "a feature Python's re has but RE2 does not", so the user is
# told what to avoid rather than that their (valid Python) pattern is malformed. Each rule is
# (RE2's reason, the pattern construct, what to tell the user); RE2 sometimes quotes only the
# start of the construct, hence the second test on the pattern itself.
_UNSUPPORTED = (
    (r"invalid escape sequence: \\[1-9]", "", "backreferences (\\1 ...) are not supported"),
    (
        r"invalid perl operator: \(\?P",
        r"\(\?P=",
        "named backreferences ((?P=name)) are not supported",
    ),
    (r"invalid perl operator: \(\?<?[=!]", "", "look-ahead and look-behind are not supported"),
    (r"invalid perl operator: \(\?>", "", "atomic groups ((?>...)) are not supported"),
    (r"bad repetition operator: [*+?}]\+", "", "possessive quantifiers (a++) are not supported"),
    (r"invalid escape sequence: \\Z", "", "\\Z is not supported (use \\z or $)"),
)

Matcher = Callable[[str], bool]


def compile_pattern(pattern: str) -> Matcher:
    """Check `pattern` and return a predicate telling whether it finds a name.

    Separate from `match_names` so a replica can refuse a bad pattern before paying for a
    linearizable read. Raises ChatError(INVALID_ARGUMENT).
    """
    if not pattern:
        return _everything
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ChatError(
            Code.INVALID_ARGUMENT,
            f"invalid pattern: {len(pattern)} characters, at most {MAX_PATTERN_CHARS}",
        )
    # Names are stored NFC (see names.normalize_name): so must a literal in the pattern be,
    # or "é" typed as e + combining accent would find nobody.
    pattern = unicodedata.normalize("NFC", pattern)
    try:
        regexp = re2.compile(pattern, _OPTIONS)
    except re2.error as err:
        raise ChatError(Code.INVALID_ARGUMENT, _explain(pattern, err)) from None
    except UnicodeEncodeError:
        # A lone surrogate: cannot be UTF-8 encoded, so RE2 never sees it.
        raise ChatError(
            Code.INVALID_ARGUMENT, f"invalid pattern {quote(pattern)}: not valid Unicode"
        ) from None
    if regexp.programsize > MAX_PROGRAM_SIZE:
        raise ChatError(
            Code.INVALID_ARGUMENT,
            f"pattern {quote(pattern)} is too complex: it compiles to {regexp.programsize} RE2 "
            f"instructions, at most {MAX_PROGRAM_SIZE}",
        )
    return lambda name: regexp.search(name) is not None


def scan(
    names: Iterable[str],
    matches: Matcher,
    budget_s: float = SCAN_BUDGET_S,
    clock: Callable[[], float] = time.monotonic,
) -> List[str]:
    """The names `matches` finds, in order; ChatError(INVALID_ARGUMENT) when matching takes
    longer than `budget_s`. Blocking: run it on a worker thread."""
    deadline = clock() + budget_s
    found: List[str] = []
    for count, name in enumerate(names, 1):
        if matches(name):
            found.append(name)
        if count % _CLOCK_EVERY != 0:
            continue
        # Hand the GIL over now and then: the event loop of this process must not wait for
        # this thread's turn to end (sleep(0) releases it at once).
        time.sleep(0)
        if clock() > deadline:
            raise ChatError(
                Code.INVALID_ARGUMENT,
                f"pattern too costly: matching stopped after {budget_s:g}s at user {count}; "
                "use a simpler pattern",
            )
    return found


def match_names(names: Iterable[str], pattern: str) -> List[str]:
    """The names `pattern` finds anywhere in them (search, not full match), sorted."""
    matches = compile_pattern(pattern)
    return sorted(name for name in names if matches(name))


def _everything(name: str) -> bool:
    return True


def _explain(pattern: str, err: Exception) -> str:
    reason = _reason(err)
    # Python's re is safe here: these are our own fixed expressions, none of which backtracks.
    for in_reason, in_pattern, advice in _UNSUPPORTED:
        if re.search(in_reason, reason) and re.search(in_pattern, pattern):
            return f"unsupported pattern {quote(pattern)}: {advice} (RE2 syntax)"
    return f"invalid pattern {quote(pattern)}: {reason}"


def _reason(err: Exception) -> str:
    """RE2's own one-line reason; the binding hands it over as bytes."""
    detail = err.args[0] if err.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", errors="replace")
    # Keep the error on one line even if RE2 quotes a pattern containing a line break.
    return " ".join(str(detail).split()) or "not a valid regular expression"
