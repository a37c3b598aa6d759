"""How a message's payloads become ZeroMQ frames: small ones joined, large ones alone.

A ZeroMQ send or receive costs the same per frame whatever its size up to
tens of kilobytes, and ZeroMQ copies frames under its copy threshold
anyway. So the payloads of a message travel as::

    layout + [blob_or_payload, blob_or_payload, ...]

``layout`` travels inside the message's envelope frame (so a message
has no frame of its own for it) and holds one signed 64-bit
little-endian length per payload: ``n >= 0`` is a payload of ``n`` bytes inside the current blob (a run of
consecutive small payloads joined into one frame), ``-n - 1`` is a
payload of ``n`` bytes that has a frame of its own (at least
:data:`OWN_FRAME_BYTES`: large arguments and results are never copied to
be joined). A message without payloads has an empty layout.

A batch of a hundred no-op tasks is one payload frame instead of a
hundred; a 1 MiB argument is still one frame, sent without a copy.
"""

from __future__ import annotations

import sys
from array import array

from hep_executor.errors import ProtocolError

__all__ = ["OWN_FRAME_BYTES", "pack_payloads", "unpack_payloads"]

#: payloads of at least this many bytes travel in a frame of their own
OWN_FRAME_BYTES = 1 << 15


def _lengths_bytes(lengths: array) -> bytes:
    if sys.byteorder == "big":
        lengths = array("q", lengths)
        lengths.byteswap()
    return lengths.tobytes()


def _lengths_of(frame) -> array:
    lengths = array("q")
    try:
        lengths.frombytes(bytes(frame))
    except ValueError as exc:
        msg = f"payload layout of {len(frame)} bytes is not a list of 8-byte lengths"
        raise ProtocolError(msg) from exc
    if sys.byteorder == "big":
        lengths.byteswap()
    return lengths


def pack_payloads(payloads) -> tuple[bytes, list]:
    """``(layout, frames)`` that carry ``payloads`` (a sequence of bytes-like objects)."""
    if not payloads:
        return b"", []
    lengths = array("q")
    frames: list = []
    run: list = []
    for payload in payloads:
        size = len(payload)
        if size >= OWN_FRAME_BYTES:
            if run:
                frames.append(b"".join(run))
                run = []
            frames.append(payload)
            lengths.append(-size - 1)
        else:
            run.append(payload)
            lengths.append(size)
    if run:
        frames.append(b"".join(run) if len(run) > 1 else run[0])
    return _lengths_bytes(lengths), frames


def unpack_payloads(layout: bytes, frames: list) -> list[bytes]:
    """The payloads that :func:`pack_payloads` put in ``layout`` and ``frames`` (as received).

    Raises
    ------
    ProtocolError
        The frames do not match their layout.
    """
    payloads: list[bytes] = []
    blobs = iter(frames)
    blob, offset = None, 0
    try:
        for size in _lengths_of(layout):
            if size < 0:
                _check_used(blob, offset)
                payloads.append(bytes(next(blobs)))
                blob = None
            else:
                if blob is None:  # a run of small payloads starts a blob
                    blob, offset = bytes(next(blobs)), 0
                payloads.append(blob[offset:offset + size])
                offset += size
    except StopIteration:
        msg = f"message has fewer payload frames ({len(frames)}) than its layout names"
        raise ProtocolError(msg) from None
    _check_used(blob, offset)
    if next(blobs, None) is not None:
        msg = f"message has more payload frames ({len(frames)}) than its layout names"
        raise ProtocolError(msg)
    return payloads


def _check_used(blob: bytes | None, offset: int) -> None:
    if blob is not None and offset != len(blob):
        msg = f"a payload frame of {len(blob)} bytes holds {offset} bytes of payloads in its layout"
        raise ProtocolError(msg)
