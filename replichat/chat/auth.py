"""Authentication on the replica a client talks to: who a request acts as, checked before it
is proposed, so the Raft log carries a verified principal and never a secret.

The chat service calls this at its edges (one call per request); apply then only compares
the principal and account generation the proposer stamped (chat/state.py), which is cheap
and deterministic. What is decided here:

- `create NAME` brings a new credential: it is hashed here (scrypt, on a worker thread) and
  only the hash goes into the log.
- `connect`, `delete`, `ack` of NAME and `send` from NAME need NAME's credential. The first
  check of a credential costs one scrypt on a worker thread; it is then remembered (by a
  SHA-256 fingerprint, never in clear) for as long as the account keeps that credential, so
  each later request of a connected client costs a dictionary lookup.
- Failed checks are rate limited per user and per client address; a limited request is
  refused before any hashing, so guessing costs the guesser time, not the replica CPU.
- `create`s are limited per client address and minute (each one costs a hash).
- With `enabled=False` (`--insecure-no-auth`) nothing is verified: requests are stamped with
  the user they name, which is the brief's open behaviour.
"""
import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import time
from typing import Awaitable, Callable, Deque, Dict, NamedTuple, Optional, Tuple

from replichat.chat.credentials import MAX_TOKEN_CHARS, fingerprint, hash_token, validate_token, verify_token
from replichat.chat.names import quote
from replichat.errors import ChatError, Code
from replichat.proto import command_pb2

log = logging.getLogger(__name__)

# The client's address (host part) for the request being served, set by each transport.
CLIENT_ADDRESS: "contextvars.ContextVar[str]" = contextvars.ContextVar("replichat_client_address", default="")

# Verified credentials remembered per replica (by fingerprint, with the hash they matched).
CACHE_ENTRIES = 4096
# Hash jobs queued or running at once; beyond, a request is refused rather than queued. A
# queued job is a few hundred bytes (only the two running ones hold scrypt's 16 MiB); the
# bound is on how long the queue can grow (1024 x ~50 ms / 2 threads: ~25 s), not memory.
# Wrong credentials cannot fill it for long: they are rate limited per user and address.
MAX_HASHING = 1024
# Distinct users / addresses tracked by the rate limiters (oldest forgotten first).
MAX_TRACKED_KEYS = 10_000


class Account(NamedTuple):
    """What the applied state says about a user: when it was created (its generation: a
    re-created user is a different account) and its stored credential hash."""

    generation: int
    credential: str


def stamp_principal(command: command_pb2.Command, name: str, generation: int) -> None:
    """Marks `command` as acting as the verified user `name`, whose account is `generation`
    (its create's log index; 0: not known, authentication off). Apply refuses it unless
    `name` is the user it acts as and that account still exists (chat/state.py). Pure: the
    simulator's clients stamp their commands with it too."""
    command.principal = name
    command.principal_generation = generation


class AuthLimits(NamedTuple):
    failures_per_user: int = 10
    failures_per_address: int = 30
    failure_window_s: float = 60.0
    creates_per_minute: int = 120


class SlidingWindow:
    """At most `limit` events per key within `window_s`; a bounded number of keys."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._events: Dict[str, Deque[float]] = collections.OrderedDict()

    def wait_s(self, key: str) -> float:
        """0 if another event is allowed now, else how long until one is."""
        events = self._events.get(key)
        if events is None:
            return 0.0
        horizon = self._clock() - self._window
        while events and events[0] <= horizon:
            events.popleft()
        if len(events) < self._limit:
            return 0.0
        return max(0.001, events[0] - horizon)

    def record(self, key: str) -> None:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= MAX_TRACKED_KEYS:
                self._events.popitem(last=False)  # type: ignore[call-arg]
            events = self._events[key] = collections.deque(maxlen=self._limit)
        events.append(self._clock())


class Authenticator:
    """Checks credentials for one replica.

    `lookup(name)` reads the applied state (None: no such user); `catch_up()` waits until this
    replica has applied everything committed before the call (a ReadIndex), for the case of a
    user created or re-created through another replica a moment ago.
    """

    def __init__(
        self,
        lookup: Callable[[str], Optional[Account]],
        catch_up: Callable[[], Awaitable[None]],
        *,
        enabled: bool = True,
        limits: AuthLimits = AuthLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._lookup = lookup
        self._catch_up = catch_up
        self._limits = limits
        self._user_failures = SlidingWindow(limits.failures_per_user, limits.failure_window_s, clock)
        self._address_failures = SlidingWindow(limits.failures_per_address, limits.failure_window_s, clock)
        self._creates = SlidingWindow(limits.creates_per_minute, 60.0, clock)
        self._verified: "collections.OrderedDict[Tuple[str, bytes], str]" = collections.OrderedDict()
        self._hashing = 0
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    # ----------------------------------------------------------------- create

    async def new_credential(self, token: str) -> str:
        """The stored form of a new user's credential ('' when none is given and
        authentication is off). Counts against the address's creates per minute."""
        address = CLIENT_ADDRESS.get()
        wait = self._creates.wait_s(address)
        if wait:
            raise ChatError(
                Code.RATE_LIMITED,
                f"too many creates from this address (at most {self._limits.creates_per_minute} a minute); "
                f"try again in {wait:.0f}s",
            )
        if not token:
            if self.enabled:
                raise ChatError(Code.UNAUTHENTICATED, "create needs a credential for the new user (the client makes one)")
            self._creates.record(address)
            return ""
        validate_token(token)
        self._creates.record(address)
        return await self._hash_off_loop(hash_token, token)

    def created(self, name: str, token: str, credential: str) -> None:
        """The create of `name` with `token` (stored as `credential`) was applied: its
        creator's requests are then cheap here at once, and immune to a lock-out by others'
        failed guesses."""
        if token and credential:
            self._remember((name, fingerprint(token)), credential)

    # ----------------------------------------------------------------- everything else

    async def stamp(self, command: command_pb2.Command, name: str, token: str, action: str) -> None:
        """Sets `command`'s principal to `name` once `token` proves it may act as `name`.

        `action` names the request in errors ("connect alice"). Raises UNAUTHENTICATED for a
        missing or wrong credential, RATE_LIMITED after too many failures, NOT_FOUND for a
        user that does not exist (as the request itself would).
        """
        account = await self.authenticate(name, token, action)
        stamp_principal(command, name, account.generation if account is not None else 0)

    async def authenticate(self, name: str, token: str, action: str) -> Optional[Account]:
        """The account `token` proves `name`'s (None: no such user, authentication off)."""
        account = self._lookup(name)
        if account is None:
            await self._catch_up()  # created a moment ago through another replica?
            account = self._lookup(name)
        if not self.enabled:
            return account
        if account is None:
            raise ChatError(Code.NOT_FOUND, f"no such user {quote(name)}")
        if not token:
            raise ChatError(
                Code.UNAUTHENTICATED,
                f"{action} needs {name}'s credential (only the client that created {name} has it)",
            )
        if len(token) > MAX_TOKEN_CHARS:  # no credential is that long: not worth a hash
            raise ChatError(Code.UNAUTHENTICATED, f"{action}: wrong credential for {name}")
        key = (name, fingerprint(token))
        if self._verified.get(key) == account.credential:
            self._verified.move_to_end(key)
            return account
        self._check_not_limited(name)
        if await self._verify(token, account.credential):
            self._remember(key, account.credential)
            return account
        # Re-created (or its credential replaced) through another replica a moment ago?
        await self._catch_up()
        latest = self._lookup(name)
        if latest is not None and latest != account and await self._verify(token, latest.credential):
            self._remember(key, latest.credential)
            return latest
        self._user_failures.record(name)
        self._address_failures.record(CLIENT_ADDRESS.get())
        log.info("refused a credential for %s from %s", quote(name), CLIENT_ADDRESS.get() or "an unknown address")
        raise ChatError(Code.UNAUTHENTICATED, f"{action}: wrong credential for {name}")

    def _check_not_limited(self, name: str) -> None:
        wait = self._user_failures.wait_s(name)
        if wait:
            raise ChatError(Code.RATE_LIMITED, f"too many failed logins for {name}; try again in {wait:.0f}s")
        wait = self._address_failures.wait_s(CLIENT_ADDRESS.get())
        if wait:
            raise ChatError(Code.RATE_LIMITED, f"too many failed logins from this address; try again in {wait:.0f}s")

    def _remember(self, key: Tuple[str, bytes], credential: str) -> None:
        self._verified[key] = credential
        self._verified.move_to_end(key)
        while len(self._verified) > CACHE_ENTRIES:
            self._verified.popitem(last=False)

    async def _verify(self, token: str, stored: str) -> bool:
        if not stored:
            return False  # created with authentication off: nobody can prove it is theirs
        return bool(await self._hash_off_loop(verify_token, token, stored))

    async def _hash_off_loop(self, fn: Callable[..., object], *args: str) -> object:
        if self._hashing >= MAX_HASHING:
            raise ChatError(Code.RATE_LIMITED, "too many logins in progress on this replica; try again shortly")
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="credentials")
        self._hashing += 1
        try:
            return await asyncio.get_event_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._hashing -= 1
