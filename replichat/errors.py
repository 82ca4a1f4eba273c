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
    # An operation reserved to the cluster's operators (membership changes) without their token.
    PERMISSION_DENIED = "permission denied"
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


# What every "outcome unknown" message says, so a person (and a test) can tell it apart.
OUTCOME_UNKNOWN = "outcome unknown"


class OutcomeUnknown(ChatError):
    """A write that may or may not be applied (hashicorp/raft's ErrLeadershipLost, for chat).

    A replica that gave up waiting for a commit cannot take back what a leader may already hold
    in its log: that entry can still commit later. So the answer is not "failed" but "unknown",
    and it is resolved by retrying the same request — same (client_id, request_seq): applied at
    most once, and the retry gets the original result if it was. The code stays UNAVAILABLE, so
    every transport maps it as before and clients fail over and retry as before.
    `client_id`/`request_seq` name the request to retry (empty/0 when not known).
    """

    def __init__(self, detail: str, client_id: str = "", request_seq: int = 0) -> None:
        super().__init__(Code.UNAVAILABLE, detail if OUTCOME_UNKNOWN in detail else f"{OUTCOME_UNKNOWN}: {detail}")
        self.client_id = client_id
        self.request_seq = request_seq
