"""ZeroMQ sockets for manager and workers, with signed messages.

:class:`Endpoint` wraps one socket (the manager's ROUTER or a worker's
DEALER), the key file's secret and the run's session: it sends typed
messages with a sequence number per link, and receives them checked,
dropping (and logging) any message that fails the signature, belongs to
another run or repeats a sequence number, before it is parsed.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from typing import Any

import zmq
import zmq.utils.z85

from hep_executor.engine import _protocol as protocol
from hep_executor.errors import (AuthenticationError, ConfigError, ProtocolError, ReplayError,
                                 SessionMismatchError)

__all__ = ["Endpoint", "bind_router", "connect_dealer", "curve_keys", "format_address"]

log = logging.getLogger(__name__)


def format_address(host: str, port: int) -> str:
    """``tcp://HOST:PORT``, with a wildcard host replaced by this machine's name."""
    if host in ("*", "0.0.0.0", ""):
        host = socket.getfqdn()
    return f"tcp://{host}:{port}"


def curve_keys(key: bytes) -> tuple[bytes, bytes]:
    """The manager's CURVE key pair ``(public, secret)``, Z85, derived from the run's key.

    Every holder of the key file can derive the manager's public key, so
    encryption needs no key of its own to hand out.
    """
    secret = hashlib.sha256(b"hep-executor curve server key\0" + key).digest()
    secret_z85 = zmq.utils.z85.encode(secret)
    return zmq.curve_public(secret_z85), secret_z85


def _check_curve() -> None:
    if not zmq.has("curve"):
        msg = "curve=True needs a libzmq built with CURVE (libsodium); this pyzmq's has none"
        raise ConfigError(msg)


def bind_router(ctx: zmq.Context, host: str = "127.0.0.1", port: int | tuple | list = 0,
                max_frame_bytes: int = -1, curve_key: bytes | None = None):
    """Bind a ROUTER socket; return ``(socket, port)``.

    ``port`` is 0 (any free port), a number, or a ``[low, high]`` range.
    ZeroMQ drops a peer that sends a frame over ``max_frame_bytes`` (-1:
    no limit) before buffering it, so no unauthenticated peer can make the
    manager hold more than that per frame. With ``curve_key`` (the run's
    key) the socket is a CURVE server: traffic is encrypted, and only
    peers that know the manager's public key (:func:`curve_keys`) connect.
    """
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
    if curve_key is not None:
        _check_curve()
        sock.curve_publickey, sock.curve_secretkey = curve_keys(curve_key)
        sock.curve_server = True
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    bind_host = "*" if host in ("0.0.0.0", "") else host
    try:
        if isinstance(port, (list, tuple)):
            if len(port) != 2 or port[0] > port[1]:
                msg = f"port range must be [low, high], got {port!r}"
                raise ConfigError(msg)
            chosen = sock.bind_to_random_port(f"tcp://{bind_host}", int(port[0]), int(port[1]) + 1, 200)
        elif int(port) == 0:
            chosen = sock.bind_to_random_port(f"tcp://{bind_host}")
        else:
            sock.bind(f"tcp://{bind_host}:{int(port)}")
            chosen = int(port)
    except zmq.ZMQError as exc:
        sock.close(0)
        msg = f"cannot bind the manager to {host}:{port}: {exc} (is the port in use?)"
        raise ConfigError(msg) from exc
    return sock, chosen


def connect_dealer(ctx: zmq.Context, address: str, identity: bytes | None = None,
                   curve_key: bytes | None = None):
    """Connect a DEALER socket to ``address`` (``tcp://HOST:PORT``); over CURVE with ``curve_key``."""
    if not address.startswith("tcp://"):
        address = "tcp://" + address
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve_key is not None:
        _check_curve()
        sock.curve_serverkey = curve_keys(curve_key)[0]
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    try:
        sock.connect(address)
    except zmq.ZMQError as exc:
        sock.close(0)
        msg = f"cannot connect to manager address {address!r}: {exc}"
        raise ConfigError(msg) from exc
    return sock


_NO_SESSION_OPS = frozenset({"hello", "session", "status_query", "status_reply", "refuse"})
_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
#: the socket's compiled send and receive: ``Socket.send_multipart`` and ``recv_multipart`` spend
#: a few microseconds a frame in Python (flags as enums, an option lookup per frame)
_send_frame = zmq.backend.Socket.send
_recv_frame = zmq.backend.Socket.recv


def _send_frames(sock: zmq.Socket, frames: list) -> None:
    """Send ``frames`` as the rest of one message (``send_multipart(frames, copy=False)``)."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send_frame(sock, frame, 0 if i == last else _MORE, copy=False)


def _recv_frames(sock: zmq.Socket) -> list[bytes]:
    """The frames of one message as bytes (``sock.recv_multipart(zmq.NOBLOCK)``); zmq.Again if none."""
    frame = _recv_frame(sock, _NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = _recv_frame(sock, _NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


class Endpoint:
    """One socket, the key file's secret, and the session its messages belong to.

    Every message sent carries the session id and the next sequence number
    of its link (per peer on a ROUTER), signed with the session's key and
    the worker's identity. A message received is dropped, and logged at
    most once a second, before its header is parsed when its signature
    fails, when it belongs to another run (:class:`SessionMismatchError`,
    which the caller may answer), or when its sequence number is not past
    the last one of its link (:class:`ReplayError`).

    Parameters
    ----------
    sock : zmq.Socket
        A ROUTER (``routed=True``) or DEALER socket.
    key : bytes
        The key file's secret (the session keys are derived from it).
    routed : bool
        Whether frames carry a peer identity first (ROUTER: the manager).
    session : bytes, optional
        The run's session id (the manager's; a worker learns it with :meth:`join`).
    identity : bytes
        A DEALER's own routing identity (signed into every message).
    """

    def __init__(self, sock: zmq.Socket, key: bytes, routed: bool, *, session: bytes | None = None,
                 identity: bytes = b""):
        self.sock = sock
        self.key = key
        self.routed = routed
        self.identity = identity
        self._direction = protocol.TO_WORKER if routed else protocol.TO_MANAGER  # of what it sends
        self._incoming = protocol.TO_MANAGER if routed else protocol.TO_WORKER
        self.session = protocol.NO_SESSION
        self._keys = {protocol.NO_SESSION: protocol.derive_key(key, protocol.NO_SESSION)}
        self._sent: dict = {}   # peer (None on a DEALER) -> last sequence number sent
        self._heard: dict = {}  # peer -> last sequence number accepted
        self.dropped = 0
        self.replayed = 0
        self._last_drop_log = 0.0
        if session is not None:
            self.join(session)

    def join(self, session: bytes) -> None:
        """Speak in ``session`` from now on (a worker, once the manager named it)."""
        self.session = session
        self._keys[session] = protocol.derive_key(self.key, session)

    def forget(self, peer: bytes) -> None:
        """Drop the sequence numbers of ``peer`` (a status client done with its question)."""
        self._sent.pop(peer, None)
        self._heard.pop(peer, None)

    def _key_for(self, session: bytes) -> bytes:
        key = self._keys.get(session)
        return key if key is not None else protocol.derive_key(self.key, session)

    def send(self, msg: Any, payloads=(), peer: bytes | None = None, *,
             session: bytes | None = None) -> bool:
        """Send ``msg`` (in ``session``, default this endpoint's); return False if the peer is gone."""
        return self.send_frames(self.prepare(msg, payloads, peer, session=session), peer)

    def prepare(self, msg: Any, payloads=(), peer: bytes | None = None, *,
                session: bytes | None = None) -> list:
        """The signed frames of ``msg`` as the next message to ``peer``, for :meth:`send_frames`.

        Frames prepared for one peer must be sent in the order they were
        prepared, and before any other message to it: each holds the next
        sequence number of its link.
        """
        session = self.session if session is None else session
        seq = self._sent.get(peer, 0) + 1
        self._sent[peer] = seq
        envelope = protocol.pack_envelope(session, seq, self._direction)
        return protocol.encode_packed(msg, self._key_for(session), payloads, envelope,
                                      peer if self.routed else self.identity)

    def send_frames(self, frames: list, peer: bytes | None = None) -> bool:
        """Send frames from :meth:`prepare` to ``peer``; return False if the peer is gone."""
        try:
            if self.routed:
                _send_frame(self.sock, peer, _MORE)
            _send_frames(self.sock, frames)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    def send_unsigned(self, msg: Any, peer: bytes) -> None:
        """Send a message signed with an empty key (only :class:`protocol.Refuse`).

        Used to tell a worker whose key does not match why it is refused;
        such a worker can read the reason but nothing it would act on.
        """
        envelope = protocol.Envelope(protocol.NO_SESSION, 0, protocol.TO_WORKER)
        frames = protocol.encode(msg, b"", (), envelope=envelope, identity=peer)
        try:
            self.sock.send_multipart([peer, *frames])
        except zmq.ZMQError:
            pass

    def recv(self) -> tuple[bytes | None, Any, list] | None:
        """Receive one message without blocking.

        Returns ``(peer, message, payloads)``, or None when nothing is
        waiting. A message that fails its checks is dropped and logged,
        and comes back as ``(peer, exception, raw_frames)`` so that the
        caller may answer a refused registration.
        """
        try:
            frames = _recv_frames(self.sock)
        except zmq.Again:
            return None
        peer = frames.pop(0) if self.routed else None
        try:
            msg, payloads = self._open(peer, frames)
        except (AuthenticationError, ProtocolError) as exc:
            self._note_drop(peer, exc)
            return peer, exc, frames
        return peer, msg, payloads

    def _open(self, peer: bytes | None, frames: list) -> tuple[Any, list]:
        """Check direction, session, signature and sequence number, then parse the header."""
        session, seq, direction = protocol.envelope_fields(frames)
        identity = peer if self.routed else self.identity
        if direction != self._incoming:
            msg = "message signed for the other direction (reflected back?)"
            raise AuthenticationError(msg)
        if session not in self._keys:
            self._refuse_other_session(frames, protocol.Envelope(session, seq, direction), identity)
        protocol.check_signature(frames, self._keys[session], identity)
        header = bytes(frames[2])
        if seq <= self._heard.get(peer, 0):
            self.replayed += 1
            if self.routed or b'"op":"refuse"' not in header[:20]:
                msg = (f"sequence number {seq} is not past {self._heard.get(peer, 0)} "
                       "on this link: a replayed or reordered message")
                raise ReplayError(msg)
        else:
            self._heard[peer] = seq
        msg = protocol.parse_header(header)
        if session == protocol.NO_SESSION and msg.op not in _NO_SESSION_OPS:
            msg = f"a {msg.op!r} message outside the run's session"
            raise AuthenticationError(msg)
        return msg, protocol.payloads_of(frames)

    def _refuse_other_session(self, frames: list, envelope, identity: bytes) -> None:
        try:
            protocol.verify(frames, protocol.derive_key(self.key, envelope.session), identity)
        except AuthenticationError:
            msg = "message signature does not match the key (wrong key file?)"
            raise AuthenticationError(msg) from None
        msg = (f"message of another run (session {envelope.session.hex()[:12]}, this run is "
               f"{self.session.hex()[:12]}): a worker of an earlier run of this key file")
        raise SessionMismatchError(msg, envelope.session)

    def _note_drop(self, peer: bytes | None, exc: Exception) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log > 1.0:
            self._last_drop_log = now
            who = peer.hex()[:12] if peer else "manager"
            log.warning("dropped a message from %s: %s (%d dropped so far)", who,
                        ascii(str(exc)[:300]), self.dropped)

    def poll(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for a message; return whether one is waiting."""
        return bool(self.sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN))

    def close(self) -> None:
        """Close the socket now."""
        self.sock.close(0)
