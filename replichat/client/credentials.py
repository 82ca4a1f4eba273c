"""Where the stock client keeps the credentials of the users it created.

`create NAME` makes a random token (chat/credentials.py says why a token and not a password)
and the client remembers it here, so a later `connect NAME`, `send` as NAME or `delete NAME`
by the same person works without typing anything: the brief's walkthrough stays word for word.

The file (`--credentials FILE`; default `$XDG_CONFIG_HOME/replichat/credentials.json`, i.e.
`~/.config/replichat/credentials.json`) is JSON `{"users": {"NAME": "TOKEN", ...}}`, mode
0600 in a 0700 directory. Several clients of one person may share it (the walkthrough runs
two): each change re-reads the file under an exclusive lock and replaces it atomically, so
no client loses another's entry. Whoever can read this file can act as its users: it is the
password file of this person's chat accounts.
"""
import json
import os
import tempfile
import unicodedata
from typing import Dict, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: one client at a time there
    fcntl = None  # type: ignore[assignment]

try:  # Python 3.8 has typing.Protocol
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

FILE_NAME = "credentials.json"


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def default_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "replichat", FILE_NAME)


class CredentialStore(Protocol):
    def get(self, name: str) -> str:
        """NAME's credential, or '' if this store has none."""

    def put(self, name: str, token: str) -> None:
        ...

    def forget(self, name: str) -> None:
        ...


class MemoryCredentials:
    """Credentials for one process only (library use, tests, benchmarks)."""

    def __init__(self, initial: Optional[Dict[str, str]] = None) -> None:
        self._tokens = {_key(name): token for name, token in (initial or {}).items()}

    def get(self, name: str) -> str:
        return self._tokens.get(_key(name), "")

    def put(self, name: str, token: str) -> None:
        self._tokens[_key(name)] = token

    def forget(self, name: str) -> None:
        self._tokens.pop(_key(name), None)


# What a client uses when given no store: shared by the clients of one process, which is one
# trust domain (a test or benchmark creates users with one client and connects with another).
PROCESS_CREDENTIALS = MemoryCredentials()


class CredentialsFileError(Exception):
    """The credentials file exists but cannot be used; the message says why and where."""


class FileCredentials:
    """The credentials file described in the module docstring."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or default_path()

    def get(self, name: str) -> str:
        return self._read().get(_key(name), "")

    def put(self, name: str, token: str) -> None:
        self._update(lambda tokens: tokens.__setitem__(_key(name), token))

    def forget(self, name: str) -> None:
        self._update(lambda tokens: tokens.pop(_key(name), None))

    def _read(self) -> Dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as file:
                data = json.load(file)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise CredentialsFileError(f"cannot read credentials file {self.path}: {error}") from None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise CredentialsFileError(f"credentials file {self.path} is not a replichat credentials file")
        return {str(name): str(token) for name, token in users.items() if isinstance(token, str)}

    def _update(self, change: "object") -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            with open(self.path + ".lock", "a") as lock:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                tokens = self._read()
                change(tokens)  # type: ignore[operator]
                fd, temporary = tempfile.mkstemp(dir=directory, prefix=".credentials-")
                try:
                    os.fchmod(fd, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8") as file:
                        json.dump({"users": tokens}, file, indent=1, sort_keys=True)
                        file.flush()
                        os.fsync(file.fileno())
                    os.replace(temporary, self.path)
                except BaseException:
                    if os.path.exists(temporary):
                        os.unlink(temporary)
                    raise
        except OSError as error:
            raise CredentialsFileError(f"cannot write credentials file {self.path}: {error}") from None
