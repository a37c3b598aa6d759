"""ZeroMQ sockets for manager and workers, with signed messages.

:class:`Endpoint` wraps one socket (the manager's ROUTER or a worker's
DEALER) and the run's key: it sends typed messages and receives them
checked, dropping (and logging) any message that fails the signature
check before it is parsed.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import zmq

from hep_executor.engine import protocol
from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError

__all__ = ["Endpoint", "bind_router", "connect_dealer", "format_address"]

log = logging.getLogger(__name__)


def format_address(host: str, port: int) -> str:
    """``tcp://HOST:PORT``, with a wildcard host replaced by this machine's name."""
    if host in ("*", "0.0.0.0", ""):
        host = socket.getfqdn()
    return f"tcp://{host}:{port}"


def bind_router(ctx: zmq.Context, host: str = "127.0.0.1", port: int | tuple | list = 0):
    """Bind a ROUTER socket; return ``(socket, port)``.

    ``port`` is 0 (any free port), a number, or a ``[low, high]`` range.
    """
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
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


def connect_dealer(ctx: zmq.Context, address: str, identity: bytes | None = None):
    """Connect a DEALER socket to ``address`` (``tcp://HOST:PORT``)."""
    if not address.startswith("tcp://"):
        address = "tcp://" + address
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
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


class Endpoint:
    """One socket and the key that signs its messages.

    Parameters
    ----------
    sock : zmq.Socket
        A ROUTER (``routed=True``) or DEALER socket.
    key : bytes
        The run's secret.
    routed : bool
        Whether frames carry a peer identity first (ROUTER).
    """

    def __init__(self, sock: zmq.Socket, key: bytes, routed: bool):
        self.sock = sock
        self.key = key
        self.routed = routed
        self.dropped = 0
        self._last_drop_log = 0.0

    def send(self, msg: Any, payloads=(), peer: bytes | None = None) -> bool:
        """Send ``msg``; return False if the peer is gone (ROUTER)."""
        frames = protocol.encode(msg, self.key, payloads)
        if self.routed:
            frames = [peer, *frames]
        try:
            self.sock.send_multipart(frames, copy=False)
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
        frames = protocol.encode(msg, b"", ())
        try:
            self.sock.send_multipart([peer, *frames])
        except zmq.ZMQError:
            pass

    def recv(self) -> tuple[bytes | None, Any, list] | None:
        """Receive one message without blocking.

        Returns ``(peer, message, payloads)``, or None when nothing is
        waiting. A message that fails its check is dropped and logged,
        and comes back as ``(peer, exception, raw_frames)`` so that the
        caller may answer a refused registration.
        """
        try:
            frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None
        peer = frames.pop(0) if self.routed else None
        try:
            msg, payloads = protocol.decode(frames, self.key)
        except (AuthenticationError, ProtocolError) as exc:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 1.0:
                self._last_drop_log = now
                who = peer.hex()[:12] if peer else "manager"
                log.warning("dropped a message from %s: %s (%d dropped so far)", who, exc, self.dropped)
            return peer, exc, frames
        return peer, msg, payloads

    def poll(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for a message; return whether one is waiting."""
        return bool(self.sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN))

    def close(self) -> None:
        """Close the socket now."""
        self.sock.close(0)
