"""The run's shared secret: made, written, read, and found for a process.

A key file holds the secret as hex (``hep-executor keygen``). Local
workers get it through ``HEP_EXECUTOR_KEY`` instead. A Work Queue
password file (any bytes) becomes a key through :func:`read_password_file`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

from hep_executor.errors import ConfigError

__all__ = ["KEY_ENV", "generate_key", "load_key", "read_key_file", "read_password_file", "warn_if_readable",
           "write_key_file"]

log = logging.getLogger(__name__)

#: environment variable that hands the key to local workers
KEY_ENV = "HEP_EXECUTOR_KEY"


def generate_key() -> bytes:
    """Return a new random 32-byte secret."""
    return secrets.token_bytes(32)


def write_key_file(path: str | os.PathLike, key: bytes | None = None) -> bytes:
    """Write ``key`` (a new one by default) as hex to ``path``, mode 0600; return it."""
    key = generate_key() if key is None else key
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


def read_key_file(path: str | os.PathLike) -> bytes:
    """Read a key file written by :func:`write_key_file` (``hep-executor keygen``)."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        msg = f"cannot read key file {str(path)!r}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    warn_if_readable(path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        msg = (f"key file {str(path)!r} does not hold a hex key of at least 16 bytes; "
               "make one with 'hep-executor keygen PATH'")
        raise ConfigError(msg)
    return key


def warn_if_readable(path: str | os.PathLike) -> bool:
    """Log a warning, and return True, when others than the owner may read the key file ``path``."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    log.warning("key file %s has mode %04o: others can read the key, and a key holder can run "
                "code on every worker; chmod 600 it (or make a new one with 'hep-executor keygen')",
                path, mode)
    return True


def read_password_file(path: str | os.PathLike) -> bytes:
    """The key of a password file: a hex key as :func:`read_key_file` reads it, else the
    SHA-256 of the file's bytes (a Work Queue password file holds any bytes).

    Raises
    ------
    ConfigError
        The file cannot be read or is empty.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        msg = f"cannot read password file {str(path)!r}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) >= 16:
        return key
    if not data.strip():
        msg = f"password file {str(path)!r} is empty"
        raise ConfigError(msg)
    return hashlib.sha256(data).digest()


def load_key(key: bytes | None = None, key_file: str | os.PathLike | None = None, *,
             from_env: bool = True, create: bool = False, who: str = "a worker") -> bytes:
    """Find the run's key: ``key`` itself, else ``key_file``, else :data:`KEY_ENV`.

    With ``create`` a missing ``key_file`` is written with a new key, and
    with neither a key nor a file a new key is made (a manager's own run).

    Raises
    ------
    ConfigError
        No key found, a key file that cannot be read, or a variable that is not hex.
    """
    if key is not None:
        return key
    if key_file is not None:
        if create and not Path(key_file).exists():
            return write_key_file(key_file)
        return read_key_file(key_file)
    if from_env and os.environ.get(KEY_ENV):
        try:
            return bytes.fromhex(os.environ[KEY_ENV])
        except ValueError:
            msg = f"{KEY_ENV} is not hex; make a key file with 'hep-executor keygen PATH'"
            raise ConfigError(msg) from None
    if create:
        return generate_key()
    msg = f"{who} needs the run's key: give --key-file (make one with 'hep-executor keygen PATH')"
    raise ConfigError(msg)
