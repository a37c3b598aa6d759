"""A raw ZeroMQ DEALER that poses as a worker, signing messages by hand (for the tests)."""

from __future__ import annotations

import time
import uuid

import zmq

from hep_executor.engine import protocol
from hep_executor.errors import AuthenticationError


class RawPeer:
    """A worker's socket without a worker: build, send, capture and replay frames."""

    def __init__(self, address: str, key: bytes, identity: bytes | None = None):
        self.key = key
        self.identity = identity or uuid.uuid4().hex[:12].encode()
        self.session = protocol.NO_SESSION
        self.seq = 0
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, self.identity)
        self.sock.connect(address)

    def frames(self, msg, payloads=(), *, session: bytes | None = None, seq: int | None = None) -> list:
        """Signed frames of ``msg`` in ``session`` (default ours) with the next sequence number."""
        session = self.session if session is None else session
        if seq is None:
            self.seq += 1
            seq = self.seq
        envelope = protocol.Envelope(session, seq, protocol.TO_MANAGER)
        return protocol.encode(msg, protocol.derive_key(self.key, session), payloads,
                               envelope=envelope, identity=self.identity)

    def send(self, msg_or_frames, payloads=(), **kw) -> list:
        frames = msg_or_frames if isinstance(msg_or_frames, list) else self.frames(msg_or_frames, payloads, **kw)
        self.sock.send_multipart(frames)
        return frames

    def recv(self, timeout: float = 5.0, session: bytes | None = None):
        """The next message from the manager as ``(message, payloads)``, or None."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        session = protocol.peek_envelope(frames).session if session is None else session
        try:
            return protocol.decode(frames, protocol.derive_key(self.key, session), self.identity)
        except AuthenticationError:
            return protocol.decode(frames, b"", self.identity)

    def join(self, manager, cores: int = 1) -> list:
        """Hello, then Register in the run's session; return the Register frames (for replays)."""
        self.send(protocol.Hello(protocol.PROTOCOL_VERSION, self.identity.decode()))
        msg = answer(manager, self)
        assert isinstance(msg, protocol.Session), msg
        self.session = bytes.fromhex(msg.session)
        frames = self.send(protocol.Register(protocol.PROTOCOL_VERSION, self.identity.decode(), "raw",
                                             1, cores, 1000, 1000))
        assert isinstance(answer(manager, self), protocol.Welcome)
        return frames

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def answer(manager, peer: RawPeer, timeout: float = 5.0):
    """Let ``manager`` process messages until ``peer`` gets an answer; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manager.wait_for_workers(10**6, timeout=0.05)
        got = peer.recv(timeout=0.05)
        if got is not None:
            return got[0]
    return None

