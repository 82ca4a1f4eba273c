"""User credentials: random tokens, and the slow salted hashes the replicated state keeps.

Why a generated token rather than a password: the brief's walkthrough (`create user3`, later
`connect user3`) must keep working word for word, with nothing typed but those lines. So the
stock client generates a 256-bit random token at `create` and remembers it in a per-user
credentials file; `connect`, `delete`, `send` and `ack` present it. A token no person chose
cannot be guessed or reused from another site, so the slow hash (scrypt) is defence in depth
should a replica's disk leak: the state, its snapshots and the Raft log hold only the hash.

Pure functions only: hashing is CPU-heavy (tens of ms, 16 MiB), so callers on an event loop
run `hash_token` / `verify_token` on a worker thread (see chat/auth.py); hashlib.scrypt
releases the GIL while it works.
"""
import base64
import hashlib
import hmac
import os
import secrets
from typing import Optional

from replichat.errors import ChatError, Code

# scrypt cost: N=2^14, r=8, p=1 (16 MiB, ~50 ms on the test machine), the parameters
# RFC 7914 suggests for interactive logins.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_SCHEME = "scrypt"
# Bounds on what a stored hash may claim, so a forged one cannot make a replica spend
# unbounded memory or time when verifying against it.
_MAX_N = 2**16
_MAX_R = 16
_MAX_P = 2

MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 128


def new_token() -> str:
    """A fresh credential: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def validate_token(token: str) -> str:
    """The token if it may be a credential, else ChatError(INVALID_ARGUMENT).

    Printable ASCII without spaces, 16 to 128 characters: generated tokens fit easily, and
    a short, typed secret (the kind that can be guessed) is refused. The message never
    quotes the token: errors end up on screens and in logs.
    """
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ChatError(
            Code.INVALID_ARGUMENT,
            f"invalid credential: {len(token)} characters, expected {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS}",
        )
    if not all("!" <= char <= "~" for char in token):
        raise ChatError(
            Code.INVALID_ARGUMENT, "invalid credential: only printable ASCII without spaces is allowed"
        )
    return token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_token(token: str, salt: Optional[bytes] = None) -> str:
    """The stored form: "scrypt$N$r$p$salt$hash" (base64 parts). CPU-heavy: not on a loop."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(
        token.encode("ascii"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
        maxmem=128 * SCRYPT_R * SCRYPT_N * 2, dklen=HASH_BYTES,
    )
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def is_stored_form(stored: str) -> bool:
    """Whether `stored` parses as a hash this module could verify against."""
    return _parse(stored) is not None


def _parse(stored: str) -> Optional[tuple]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        return None
    if not (8 <= len(salt) <= 64 and len(digest) == HASH_BYTES):
        return None
    return n, r, p, salt, digest


def verify_token(token: str, stored: str) -> bool:
    """Whether `token` is the credential `stored` was made from. CPU-heavy: not on a loop."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    n, r, p, salt, expected = parsed
    try:
        actual = hashlib.scrypt(
            token.encode("ascii"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=len(expected)
        )
    except (UnicodeEncodeError, ValueError):
        return False
    return hmac.compare_digest(actual, expected)


def fingerprint(token: str) -> bytes:
    """A fast digest of a token, for an in-memory cache of tokens already verified; the
    token itself is never kept."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
