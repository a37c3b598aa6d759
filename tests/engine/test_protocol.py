"""Protocol messages: round trips, and rejection of bad, tampered and wrong-version messages."""

import json

import pytest

from hep_executor.engine import keys, protocol
from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError, VersionMismatchError

KEY = b"k" * 32


@pytest.mark.parametrize("msg", [
    protocol.Register(protocol.PROTOCOL_VERSION, "w1", "host", 123, 4, 8000, 10000),
    protocol.Welcome(5.0, 60.0),
    protocol.Refuse("no"),
    protocol.Tasks([{"id": 1, "fn": "ab", "cores": 1, "memory_mb": 0, "category": "c"}], ["ab"]),
    protocol.Results([{"id": 1, "status": "ok"}]),
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
    frames[1] = frames[1].replace(b"1", b"2")
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
    return [protocol._sign(KEY, [header]), header]


def test_unknown_op_rejected():
    with pytest.raises(ProtocolError, match="malformed"):
        protocol.decode(_signed_raw({"op": "launch_missiles"}), KEY)


def test_unknown_field_rejected():
    with pytest.raises(ProtocolError, match="heartbeat"):
        protocol.decode(_signed_raw({"op": "heartbeat", "extra": 1}), KEY)


def test_wrong_version_named():
    body = {"op": "register", "version": 99, "worker_id": "w", "host": "h", "pid": 1,
            "cores": 1, "memory_mb": 1, "disk_mb": 1}
    with pytest.raises(VersionMismatchError, match="version 99.*speaks 1"):
        protocol.decode(_signed_raw(body), KEY)


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
