"""The one error type the service raises to its clients, with a code each transport maps."""
import enum


class Code(enum.Enum):
    INVALID_ARGUMENT = "invalid argument"
    ALREADY_EXISTS = "already exists"
    NOT_FOUND = "not found"
    STALE_REQUEST = "stale request"
    # A credential is missing or wrong for what the request does as a user.
    UNAUTHENTICATED = "unauthenticated"
    # Too many failed logins, creates or streams from this client: wait, do not retry elsewhere.
    RATE_LIMITED = "rate limited"
    # No quorum reachable in time, or this replica is shutting down: retry elsewhere or later.
    UNAVAILABLE = "unavailable"


class ChatError(Exception):
    """A request the service refuses; `message` is one line meant for a person."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ChatError({self.code.name}, {self.message!r})"
