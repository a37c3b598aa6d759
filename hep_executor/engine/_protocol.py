"""Typed messages between manager and workers, and their signed wire form.

A message travels as ZeroMQ multipart frames::

    [signature, envelope + layout, header, blob_or_payload, ...]

``envelope`` is 25 bytes: the run's session id (16), the sender's
sequence number (8, little-endian, strictly increasing per direction and
peer) and the direction (``w``: worker to manager, ``m``: manager to
worker), followed by the payloads' layout (8 bytes per payload). ``header`` is the message as compact JSON (``{"op": ..., ...}``);
payloads are opaque bytes (pickled arguments, results, functions); small
ones travel joined in one frame, large ones alone, as ``layout`` says
(:mod:`hep_executor.engine._frames`).

The signature is an HMAC-SHA256 with the run's key over the worker's
identity (the ZeroMQ routing id), the envelope, the header and every
frame after it. The run's key is derived from the key file's secret and the
session id with HKDF-SHA256 (:func:`derive_key`), so a message captured
in one run fails the check in the next; a message replayed from another
identity fails it too, and one replayed or reordered on the same link is
refused by its sequence number (see :mod:`hep_executor.engine._transport`).
:func:`decode` checks the signature before it parses anything, and never
unpickles: payloads stay bytes for the caller.

Before it knows the run's session a worker speaks in the empty session
(:data:`NO_SESSION`): :class:`Hello` there is answered by :class:`Session`,
which names the run's session; registration and all that follows use it.

What the key protects: who may take part in a run. Anyone holding the
key file can run code on the workers (tasks are pickles) and can read
nothing that is not also on the wire: the transport is signed, not
encrypted.

Every message class below is a frozen dataclass with an ``op`` name;
:data:`MESSAGES` maps names to classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any, ClassVar

from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError, VersionMismatchError
from hep_executor.engine._frames import pack_payloads, unpack_payloads

__all__ = [
    "MESSAGES",
    "PROTOCOL_VERSION",
    "NO_SESSION",
    "Bye",
    "Cancel",
    "Envelope",
    "Heartbeat",
    "Hello",
    "Refuse",
    "Register",
    "Results",
    "Session",
    "Shutdown",
    "StatusQuery",
    "StatusReply",
    "Tasks",
    "Welcome",
    "decode",
    "derive_key",
    "encode",
    "encode_packed",
    "envelope_fields",
    "header_of",
    "new_session",
    "pack_envelope",
    "payloads_of",
    "peek_envelope",
    "sign_frames",
]

PROTOCOL_VERSION = 3
_SIG_LEN = 32
_SESSION_LEN = 16
_ENVELOPE_LEN = _SESSION_LEN + 8 + 1
#: the session of messages sent before a worker knows the run's session
NO_SESSION = bytes(_SESSION_LEN)
TO_MANAGER, TO_WORKER = b"w", b"m"
#: most bytes a header may have (checked before it is parsed)
MAX_HEADER = 1 << 20


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Hello:
    """Worker -> manager, in :data:`NO_SESSION`: which session does this run use?"""

    op: ClassVar[str] = "hello"
    version: int
    worker_id: str


@dataclass(frozen=True)
class Session:
    """Manager -> worker, in :data:`NO_SESSION`: the run's session id (hex)."""

    op: ClassVar[str] = "session"
    session: str


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
    host_cores: int = 0  # what the worker's machine has (0: not said)
    host_memory_mb: int = 0


@dataclass(frozen=True)
class Welcome:
    """Manager -> worker: registration accepted."""

    op: ClassVar[str] = "welcome"
    heartbeat_interval: float
    worker_timeout: float  # the manager's wish; a worker keeps its own if smaller
    max_message_mb: int = 0  # largest frame the manager takes (0: no limit)


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
    ``warm_mb`` is what the worker's slots hold from task to task
    together (MB; None: unchanged): the manager keeps it free.
    """

    op: ClassVar[str] = "results"
    items: list
    running: list | None = None
    warm_mb: float | None = None


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
    for cls in (Hello, Session, Register, Welcome, Refuse, Tasks, Results, Heartbeat, Cancel,
                Shutdown, Bye, StatusQuery, StatusReply)
}
_FIELDS = {op: tuple(f.name for f in dataclasses.fields(cls)) for op, cls in MESSAGES.items()}


# ---------------------------------------------------------------- wire form


def new_session() -> bytes:
    """A fresh random session id for one run."""
    return secrets.token_bytes(_SESSION_LEN)


def derive_key(secret: bytes, session: bytes) -> bytes:
    """The message key of ``session``: HKDF-SHA256 (RFC 5869) of the key file's ``secret``."""
    return _hkdf_sha256(secret, session, b"hep-executor messages")


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """The first 32 bytes of HKDF-SHA256 (extract, then one block of expand)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True)
class Envelope:
    """The session, sequence number and direction of one message."""

    session: bytes
    seq: int
    direction: bytes

    def pack(self) -> bytes:
        return pack_envelope(self.session, self.seq, self.direction)


def pack_envelope(session: bytes, seq: int, direction: bytes) -> bytes:
    """The envelope bytes of one message (what :meth:`Envelope.pack` gives)."""
    return session + seq.to_bytes(8, "little") + direction


def peek_envelope(frames: list) -> Envelope:
    """Read the envelope of ``frames`` (not yet authenticated: only to pick the key).

    Raises
    ------
    AuthenticationError
        The frames have no signature or no envelope.
    """
    return Envelope(*envelope_fields(frames))


def envelope_fields(frames: list) -> tuple[bytes, int, bytes]:
    """:func:`peek_envelope` as a plain ``(session, seq, direction)`` tuple."""
    _check_framing(frames)
    raw = bytes(frames[1])[:_ENVELOPE_LEN]
    return raw[:_SESSION_LEN], int.from_bytes(raw[_SESSION_LEN:-1], "little"), raw[-1:]


def payloads_of(frames: list) -> list[bytes]:
    """The payloads of a message's ``frames`` (signature checked already), as :func:`encode` packed them.

    Raises
    ------
    ProtocolError
        The frames do not match the layout in the envelope.
    """
    return unpack_payloads(bytes(frames[1])[_ENVELOPE_LEN:], frames[3:])


def _check_framing(frames: list) -> None:
    if (len(frames) < 3 or len(frames[0]) != _SIG_LEN or len(frames[1]) < _ENVELOPE_LEN
            or (len(frames[1]) - _ENVELOPE_LEN) % 8):
        msg = "message has no valid signature and envelope frames"
        raise AuthenticationError(msg)


#: messages up to this many bytes are signed in one call over their joined frames
_JOIN_SIGN_BYTES = 1 << 16


def sign_frames(key: bytes, identity: bytes, frames) -> bytes:
    """The signature :func:`encode` puts first: HMAC-SHA256 over each of ``identity`` and ``frames``, each
    preceded by its length (8 bytes).

    Small messages are joined and signed in one call; large ones are fed
    frame by frame (no copy of a big payload). Both give the same MAC.
    """
    parts = (identity, *frames)
    if sum(map(len, parts)) <= _JOIN_SIGN_BYTES:
        joined = b"".join(b for frame in parts for b in (len(frame).to_bytes(8, "little"), frame))
        return hmac.digest(key, joined, "sha256")
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for frame in parts:
        mac.update(len(frame).to_bytes(8, "little"))
        mac.update(frame)
    return mac.digest()


def encode(msg: Any, key: bytes, payloads=(), *, envelope: Envelope | None = None,
           identity: bytes = b"") -> list[bytes]:
    """Return the signed frames of ``msg`` followed by ``payloads``.

    Parameters
    ----------
    msg : one of the message dataclasses
    key : bytes
        The session's key (:func:`derive_key`).
    payloads : sequence of bytes
        Opaque payload frames.
    envelope : Envelope
        Session, sequence number and direction (default: no session, 0, to the manager).
    identity : bytes
        The worker's identity on the link (signed, not sent).
    """
    envelope = envelope or Envelope(NO_SESSION, 0, TO_MANAGER)
    return encode_packed(msg, key, payloads, envelope.pack(), identity)


def encode_packed(msg: Any, key: bytes, payloads, envelope: bytes, identity: bytes) -> list[bytes]:
    """:func:`encode` with the envelope given as bytes (:func:`pack_envelope`)."""
    layout, blobs = pack_payloads(payloads)
    frames = [envelope + layout, header_of(msg), *blobs]
    return [sign_frames(key, identity, frames), *frames]


def header_of(msg: Any) -> bytes:
    """The header frame of ``msg``: its op and fields as compact JSON."""
    body = {"op": msg.op}
    for name in _FIELDS[msg.op]:
        body[name] = getattr(msg, name)
    return _dumps(body).encode()


def _compact_encoder():
    """``json.dumps(obj, separators=(",", ":"))`` as one encoder built once (``dumps`` builds one per call)."""
    encoder = json.JSONEncoder(separators=(",", ":"))
    if c_make_encoder is None:
        return encoder.encode
    chunks = c_make_encoder(None, encoder.default, encode_basestring_ascii, None, ":", ",",
                            False, False, True)
    return lambda obj: "".join(chunks(obj, 0))


_dumps = _compact_encoder()
_raw_decode = json.JSONDecoder().raw_decode


def _loads(header: bytes) -> Any:
    """``json.loads(header)``, without its per-call set-up when the header is UTF-8 and nothing else."""
    try:
        text = header.decode()
        body, end = _raw_decode(text)
    except ValueError:
        return json.loads(header)
    return body if end == len(text) else json.loads(header)


def verify(frames: list, key: bytes, identity: bytes = b"") -> None:
    """Check the signature of ``frames`` (as from :func:`encode`) under ``key`` and ``identity``.

    Raises
    ------
    AuthenticationError
        The signature is missing or wrong.
    """
    _check_framing(frames)
    check_signature(frames, key, identity)


def check_signature(frames: list, key: bytes, identity: bytes = b"") -> None:
    """:func:`verify` for frames whose framing :func:`peek_envelope` has checked already."""
    if not hmac.compare_digest(bytes(frames[0]), sign_frames(key, identity, frames[1:])):
        msg = "message signature does not match the key (wrong key file?)"
        raise AuthenticationError(msg)


def decode(frames: list, key: bytes, identity: bytes = b"") -> tuple[Any, list]:
    """Check the signature of ``frames`` and return ``(message, payloads)``.

    The envelope is not checked here (the transport does it against its
    session and sequence numbers).

    Raises
    ------
    AuthenticationError
        The signature is missing or wrong: nothing was parsed.
    ProtocolError
        The header is not a known message.
    """
    verify(frames, key, identity)
    return parse_header(bytes(frames[2])), payloads_of(frames)


def parse_header(header: bytes) -> Any:
    """Parse a JSON header into its message class (no signature check)."""
    if len(header) > MAX_HEADER:
        msg = f"message header of {len(header)} bytes, over the {MAX_HEADER} allowed"
        raise ProtocolError(msg)
    try:
        body = _loads(header)
        op = body.pop("op")
        cls = MESSAGES[op]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"malformed message header: {header[:80]!r}"
        raise ProtocolError(msg) from exc
    if cls in (Register, Hello) and body.get("version") != PROTOCOL_VERSION:
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
