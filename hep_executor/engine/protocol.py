"""Typed messages between manager and workers, and their signed wire form.

A message travels as ZeroMQ multipart frames::

    [signature, header, payload_0, payload_1, ...]

``header`` is the message as compact JSON (``{"op": ..., ...}``); payload
frames are opaque bytes (pickled arguments, results, functions). The
signature is an HMAC-SHA256 over the header and every payload frame with
the run's secret key. :func:`decode` checks it before it parses anything,
and never unpickles: payloads stay bytes for the caller.

Every message class below is a frozen dataclass with an ``op`` name;
:data:`MESSAGES` maps names to classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError, VersionMismatchError

__all__ = [
    "MESSAGES",
    "PROTOCOL_VERSION",
    "Bye",
    "Cancel",
    "Heartbeat",
    "Refuse",
    "Register",
    "Results",
    "Shutdown",
    "StatusQuery",
    "StatusReply",
    "Tasks",
    "Welcome",
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
_SIG_LEN = 32


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Register:
    """Worker -> manager: a worker joins, with its resources."""

    op: ClassVar[str] = "register"
    version: int
    worker_id: str
    host: str
    pid: int
    cores: int
    memory_mb: int
    disk_mb: int


@dataclass(frozen=True)
class Welcome:
    """Manager -> worker: registration accepted."""

    op: ClassVar[str] = "welcome"
    heartbeat_interval: float
    worker_timeout: float  # the manager's wish; a worker keeps its own if smaller


@dataclass(frozen=True)
class Refuse:
    """Manager -> worker: registration refused, with the reason."""

    op: ClassVar[str] = "refuse"
    reason: str


@dataclass(frozen=True)
class Tasks:
    """Manager -> worker: tasks to run.

    ``items`` holds one dict per task: ``id``, ``fn`` (function hash),
    ``cores``, ``memory_mb``, ``category``. ``functions`` lists the hashes
    of functions sent along with this message. Payload frames: one
    per function in ``functions`` order, then one (pickled arguments) per
    item.
    """

    op: ClassVar[str] = "tasks"
    items: list
    functions: list = field(default_factory=list)


@dataclass(frozen=True)
class Results:
    """Worker -> manager: finished tasks; one payload frame per item.

    Each item holds ``id``, ``status`` (``ok``, ``error``, ``exhausted``,
    ``lost``), ``wall``, ``cpu``, ``peak_mb``, ``compressed``, ``slot``,
    ``started``, ``error`` (text, for failures). ``running`` lists the
    ids of the tasks the worker's slots run now (None: unchanged).
    """

    op: ClassVar[str] = "results"
    items: list
    running: list | None = None


@dataclass(frozen=True)
class Heartbeat:
    """Either way: I am alive."""

    op: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Cancel:
    """Manager -> worker: drop or stop these tasks."""

    op: ClassVar[str] = "cancel"
    ids: list


@dataclass(frozen=True)
class Shutdown:
    """Manager -> worker: stop now."""

    op: ClassVar[str] = "shutdown"
    reason: str = ""


@dataclass(frozen=True)
class Bye:
    """Worker -> manager: leaving, with the reason."""

    op: ClassVar[str] = "bye"
    reason: str = ""


@dataclass(frozen=True)
class StatusQuery:
    """Client -> manager: how much work is there (used by the worker factory)."""

    op: ClassVar[str] = "status_query"


@dataclass(frozen=True)
class StatusReply:
    """Manager -> client: the answer to :class:`StatusQuery`."""

    op: ClassVar[str] = "status_reply"
    status: dict


MESSAGES: dict[str, type] = {
    cls.op: cls
    for cls in (Register, Welcome, Refuse, Tasks, Results, Heartbeat, Cancel,
                Shutdown, Bye, StatusQuery, StatusReply)
}
_FIELDS = {op: tuple(f.name for f in dataclasses.fields(cls)) for op, cls in MESSAGES.items()}


# ---------------------------------------------------------------- wire form


def _sign(key: bytes, frames) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for frame in frames:
        mac.update(len(frame).to_bytes(8, "little"))
        mac.update(frame)
    return mac.digest()


def encode(msg: Any, key: bytes, payloads=()) -> list[bytes]:
    """Return the signed frames of ``msg`` followed by ``payloads``.

    Parameters
    ----------
    msg : one of the message dataclasses
    key : bytes
        The run's secret.
    payloads : sequence of bytes
        Opaque payload frames.
    """
    body = {"op": msg.op}
    for name in _FIELDS[msg.op]:
        body[name] = getattr(msg, name)
    header = json.dumps(body, separators=(",", ":")).encode()
    frames = [header, *payloads]
    return [_sign(key, frames), *frames]


def decode(frames: list, key: bytes) -> tuple[Any, list]:
    """Check the signature of ``frames`` and return ``(message, payloads)``.

    Raises
    ------
    AuthenticationError
        The signature is missing or wrong: nothing was parsed.
    ProtocolError
        The header is not a known message.
    """
    if len(frames) < 2 or len(frames[0]) != _SIG_LEN:
        msg = "message has no valid signature frame"
        raise AuthenticationError(msg)
    frames = [bytes(f) for f in frames]
    if not hmac.compare_digest(frames[0], _sign(key, frames[1:])):
        msg = "message signature does not match the key (wrong key file?)"
        raise AuthenticationError(msg)
    return parse_header(frames[1]), frames[2:]


def parse_header(header: bytes) -> Any:
    """Parse a JSON header into its message class (no signature check)."""
    try:
        body = json.loads(header)
        op = body.pop("op")
        cls = MESSAGES[op]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"malformed message header: {header[:80]!r}"
        raise ProtocolError(msg) from exc
    if cls is Register and body.get("version") != PROTOCOL_VERSION:
        msg = (f"worker {body.get('worker_id', '?')} on {body.get('host', '?')} speaks protocol "
               f"version {body.get('version')!r}, this manager speaks {PROTOCOL_VERSION}: "
               "install the same hep_executor version on both sides")
        raise VersionMismatchError(msg)
    try:
        return cls(**body)
    except TypeError as exc:
        msg = f"malformed {op!r} message: {exc}"
        raise ProtocolError(msg) from exc


# ---------------------------------------------------------------- keys
