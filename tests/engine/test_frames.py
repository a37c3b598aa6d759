"""Payload framing: small payloads joined into one frame, large ones alone, and back."""

from __future__ import annotations

import pytest

from hep_executor.engine import protocol
from hep_executor.engine import OWN_FRAME_BYTES, pack_payloads, unpack_payloads
from hep_executor.errors import ProtocolError

BIG = OWN_FRAME_BYTES


@pytest.mark.parametrize("payloads", [
    [],
    [b""],
    [b"abc", b""],
    [b"", b"", b"x"],
    [b"a" * 10] * 100,
    [b"x" * BIG],
    [b"s", b"x" * BIG, b"t", b"u", b"y" * (BIG + 1), b""],
    [b"x" * BIG, b"y" * BIG],
])
def test_payloads_come_back_as_sent(payloads):
    layout, frames = pack_payloads(payloads)
    assert len(layout) == 8 * len(payloads)
    assert unpack_payloads(layout, frames) == payloads


def test_small_payloads_share_a_frame_and_large_ones_travel_alone():
    big = b"b" * BIG
    _, frames = pack_payloads([b"1", b"22", big, b"3", b"4"])
    # the run "1"+"22", the big payload itself (the same object: no copy), the run "3"+"4"
    assert frames[0] == b"122" and frames[1] is big and frames[2] == b"34" and len(frames) == 3
    assert len(pack_payloads([b"n" * 20] * 1000)[1]) == 1


@pytest.mark.parametrize("change, message", [
    (lambda lay, f: (lay, f[:-1]), "fewer payload frames"),
    (lambda lay, f: (lay, [*f, b"extra"]), "more payload frames"),
    (lambda lay, f: (lay, [f[0] + b"!", *f[1:]]), "holds"),
    (lambda lay, f: (lay[:-3], f), "8-byte lengths"),
])
def test_frames_that_do_not_match_their_layout_are_a_protocol_error(change, message):
    layout, frames = pack_payloads([b"ab", b"cd", b"x" * BIG])
    with pytest.raises(ProtocolError, match=message):
        unpack_payloads(*change(layout, frames))


def test_a_signed_message_carries_its_payloads_packed():
    key = protocol.derive_key(b"k" * 32, protocol.new_session())
    payloads = [b"f" * 100, *(bytes([i]) * 5 for i in range(50)), b"z" * (2 * BIG)]
    frames = protocol.encode(protocol.Tasks([{"id": i} for i in range(50)], ["h"]), key, payloads)
    assert len(frames) == 3 + 2  # signature, envelope and layout, header; one blob, the large payload
    msg, got = protocol.decode(frames, key)
    assert got == payloads and len(msg.items) == 50
