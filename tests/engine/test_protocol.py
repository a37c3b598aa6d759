"""Protocol messages: round trips, and rejection of bad, tampered and wrong-version messages."""

import json

import pytest

from hep_executor.engine import keys, protocol
from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError, VersionMismatchError

KEY = b"k" * 32


@pytest.mark.parametrize("msg", [
    protocol.Hello(protocol.PROTOCOL_VERSION, "w1"),
    protocol.Session("ab" * 16),
    protocol.Register(protocol.PROTOCOL_VERSION, "w1", "host", 123, 4, 8000, 10000),
    protocol.Welcome(5.0, 60.0),
    protocol.Refuse("no"),
    protocol.Tasks([{"id": 1, "fn": "ab", "cores": 1, "memory_mb": 0, "category": "c"}], ["ab"]),
    protocol.Results([{"id": 1, "status": "ok"}]),
    protocol.Results([], running=[3, 4]),
    protocol.Heartbeat(),
    protocol.Cancel([1, 2]),
    protocol.Shutdown("bye"),
    protocol.Bye("done"),
    protocol.StatusQuery(),
    protocol.StatusReply({"workers": 2}),
])
def test_round_trip(msg):
    frames = protocol.encode(msg, KEY, [b"payload", b""])
    decoded, payloads = protocol.decode(frames, KEY)
    assert decoded == msg
    assert payloads == [b"payload", b""]


def test_wrong_key_rejected():
    frames = protocol.encode(protocol.Heartbeat(), KEY)
    with pytest.raises(AuthenticationError):
        protocol.decode(frames, b"x" * 32)


def test_tampered_payload_rejected():
    frames = protocol.encode(protocol.Results([{"id": 1}]), KEY, [b"result"])
    frames[-1] = b"evil"
    with pytest.raises(AuthenticationError):
        protocol.decode(frames, KEY)


def test_tampered_header_rejected():
    frames = protocol.encode(protocol.Cancel([1]), KEY)
    frames[2] = frames[2].replace(b"1", b"2")
    with pytest.raises(AuthenticationError):
        protocol.decode(frames, KEY)


def test_missing_signature_rejected():
    with pytest.raises(AuthenticationError):
        protocol.decode([b'{"op":"heartbeat"}'], KEY)


def test_pickle_payload_never_unpickled_on_bad_signature():
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    frames = protocol.encode(protocol.Results([{"id": 1}]), b"other key", [pickle.dumps(Boom())])
    with pytest.raises(AuthenticationError):
        protocol.decode(frames, KEY)


def _signed_raw(body: dict) -> list:
    header = json.dumps(body).encode()
    envelope = protocol.Envelope(protocol.NO_SESSION, 1, protocol.TO_MANAGER).pack()
    return [protocol.sign_frames(KEY, b"", [envelope, header]), envelope, header]


def test_unknown_op_rejected():
    with pytest.raises(ProtocolError, match="malformed"):
        protocol.decode(_signed_raw({"op": "launch_missiles"}), KEY)


def test_unknown_field_rejected():
    with pytest.raises(ProtocolError, match="heartbeat"):
        protocol.decode(_signed_raw({"op": "heartbeat", "extra": 1}), KEY)


def test_wrong_version_named():
    body = {"op": "register", "version": 99, "worker_id": "w", "host": "h", "pid": 1,
            "cores": 1, "memory_mb": 1, "disk_mb": 1}
    with pytest.raises(VersionMismatchError, match=f"version 99.*speaks {protocol.PROTOCOL_VERSION}"):
        protocol.decode(_signed_raw(body), KEY)


def test_signature_covers_the_identity_and_the_envelope():
    envelope = protocol.Envelope(protocol.new_session(), 7, protocol.TO_MANAGER)
    frames = protocol.encode(protocol.Heartbeat(), KEY, envelope=envelope, identity=b"worker-a")
    assert protocol.decode(frames, KEY, b"worker-a")[0] == protocol.Heartbeat()
    with pytest.raises(AuthenticationError):
        protocol.decode(frames, KEY, b"worker-b")
    moved = list(frames)
    moved[1] = protocol.Envelope(envelope.session, 8, protocol.TO_MANAGER).pack()
    with pytest.raises(AuthenticationError):
        protocol.decode(moved, KEY, b"worker-a")


def test_session_keys_differ_per_session_and_secret():
    s1, s2 = protocol.new_session(), protocol.new_session()
    assert s1 != s2
    assert protocol.derive_key(KEY, s1) != protocol.derive_key(KEY, s2)
    assert protocol.derive_key(KEY, s1) != protocol.derive_key(b"j" * 32, s1)
    assert protocol.derive_key(KEY, s1) == protocol.derive_key(KEY, s1)
    # RFC 5869, test case 3 (no salt, no info): the first 32 bytes of its OKM
    okm = protocol._hkdf_sha256(bytes.fromhex("0b" * 22), b"", b"")
    assert okm.hex() == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"


def test_oversized_header_is_refused_before_parsing():
    with pytest.raises(ProtocolError, match="over the"):
        protocol.parse_header(b"{" * (protocol.MAX_HEADER + 1))


def test_key_file_round_trip(tmp_path):
    key = keys.write_key_file(tmp_path / "k")
    assert keys.read_key_file(tmp_path / "k") == key
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_bad_key_file_names_the_file(tmp_path):
    (tmp_path / "bad").write_text("not hex")
    with pytest.raises(ConfigError, match="bad"):
        keys.read_key_file(tmp_path / "bad")
    with pytest.raises(ConfigError, match="missing"):
        keys.read_key_file(tmp_path / "missing")


@pytest.mark.parametrize("msg", [
    protocol.Heartbeat(),
    protocol.Tasks([{"id": 1, "fn": "ab", "cores": 1, "memory_mb": 0, "category": "caf\u00e9"}], ["ab"]),
    protocol.Results([{"id": 1, "wall": 0.25, "compressed": False, "error": None}], running=[1]),
    protocol.StatusReply({"workers": 2, "nested": {"x": [1.5, True]}}),
])
def test_header_is_the_compact_json_of_the_message(msg):
    body = {"op": msg.op, **{f: getattr(msg, f) for f in protocol._FIELDS[msg.op]}}
    assert protocol.header_of(msg) == json.dumps(body, separators=(",", ":")).encode()


def test_header_of_an_unencodable_field_raises_as_json_does():
    with pytest.raises(TypeError, match="not JSON serializable"):
        protocol.header_of(protocol.Cancel([object()]))


@pytest.mark.parametrize("header", [
    b'  {"op": "cancel", "ids": [1]}\n',
    '{"op":"cancel","ids":[1]}'.encode("utf-16"),
])
def test_header_parsing_accepts_what_json_loads_accepts(header):
    assert protocol.parse_header(header) == protocol.Cancel([1])


@pytest.mark.parametrize("header", [b'{"op":"cancel","ids":[1]} x', b'{"op":"cancel"', b"\xff\xfe\xfa"])
def test_header_parsing_refuses_what_json_loads_refuses(header):
    with pytest.raises(ProtocolError, match="malformed"):
        protocol.parse_header(header)


def test_envelope_packs_and_reads_back():
    session = protocol.new_session()
    packed = protocol.pack_envelope(session, 2**40 + 3, protocol.TO_WORKER)
    assert packed == protocol.Envelope(session, 2**40 + 3, protocol.TO_WORKER).pack()
    frames = protocol.encode_packed(protocol.Heartbeat(), KEY, [b"p"], packed, b"w")
    assert protocol.envelope_fields(frames) == (session, 2**40 + 3, protocol.TO_WORKER)
    assert protocol.peek_envelope(frames) == protocol.Envelope(session, 2**40 + 3, protocol.TO_WORKER)
    assert protocol.decode(frames, KEY, b"w") == (protocol.Heartbeat(), [b"p"])
