"""Sessions: captured messages replayed from another identity, on the same link, or into the next run are dropped."""

import logging
import pickle

import pytest

from hep_executor import Manager
from hep_executor.engine import protocol
from hep_executor.engine import pickle_bytes
from tests.engine import tasks
from tests.engine.rawpeer import RawPeer, answer


def _pump(m, seconds=0.3):
    m.wait_for_workers(10**6, timeout=seconds)


def _result_frames(peer, m, value):
    """Receive one task on ``peer`` and return signed Results frames carrying ``value`` for it."""
    msg = answer(m, peer)
    while not isinstance(msg, protocol.Tasks):
        assert msg is not None, "no task came"
        msg = answer(m, peer)
    (item,) = msg.items
    payload, _ = pickle_bytes(value), None
    report = {"id": item["id"], "status": "ok", "wall": 0.0, "cpu": 0.0, "peak_mb": 1.0,
              "compressed": False, "slot": "raw/0", "started": 0.0, "error": ""}
    return item["id"], peer.frames(protocol.Results([report]), [payload])


@pytest.fixture()
def key_file(tmp_path):
    return str(tmp_path / "run.key")


def test_replayed_register_from_another_identity_or_link_is_dropped(key_file):
    with Manager(local_workers=0, key_file=key_file) as m:
        a, b = RawPeer(m.address, m.key), RawPeer(m.address, m.key)
        try:
            register = a.join(m)
            assert len(m.workers()) == 1
            before = m.endpoint.dropped
            b.send(register)  # another identity: the signature covers the sender's identity
            a.send(register)  # the same link: its sequence number was seen
            _pump(m)
            assert len(m.workers()) == 1
            assert m.endpoint.dropped == before + 2 and m.endpoint.replayed == 1
        finally:
            a.close()
            b.close()


def test_replayed_results_and_heartbeat_are_dropped_in_this_run_and_the_next(key_file):
    with Manager(local_workers=0, key_file=key_file) as m1:
        a, b = RawPeer(m1.address, m1.key), RawPeer(m1.address, m1.key)
        try:
            a.join(m1)
            b.join(m1)
            first = m1.submit(tasks.square, 1)
            tid, results = _result_frames(a, m1, "value of run 1")
            heartbeat = a.frames(protocol.Heartbeat())
            b.send(results)  # from another identity: dropped, the task stays running
            b.send(heartbeat)
            _pump(m1)
            assert m1.wait(timeout=0.2) == [] and m1.endpoint.dropped == 2
            a.send(results)
            (r,) = m1.wait(timeout=5)
            assert (r.id, r.value) == (first, "value of run 1")
            a.send(results)  # the same link again: a replay
            _pump(m1)
            assert m1.endpoint.replayed == 1
        finally:
            b.close()
    with Manager(local_workers=0, key_file=key_file) as m2:  # same key file, ids restart at 1
        assert m2.session != m1.session
        again = RawPeer(m2.address, m2.key, identity=a.identity)
        a.close()
        try:
            again.join(m2)
            second = m2.submit(tasks.square, 2)
            assert second == first
            again.send(heartbeat)
            again.send(results)  # run 1's value for task 1
            _pump(m2)
            assert m2.wait(timeout=0.3) == [] and m2.endpoint.dropped == 2
            tid2, fresh = _result_frames(again, m2, "value of run 2")
            again.send(fresh)
            (r,) = m2.wait(timeout=5)
            assert (r.id, r.value) == (second, "value of run 2")
        finally:
            again.close()


def test_reordered_sequence_number_is_dropped_and_logged(caplog):
    with Manager(local_workers=0) as m:
        a = RawPeer(m.address, m.key)
        try:
            a.join(m)
            late = a.frames(protocol.Heartbeat())
            a.send(protocol.Heartbeat())
            a.send(late)
            with caplog.at_level(logging.WARNING, logger="hep_executor.engine._transport"):
                _pump(m)
            assert m.endpoint.replayed == 1
            assert "replayed or reordered" in caplog.text
        finally:
            a.close()


def test_worker_of_another_session_is_refused_with_a_reason(key_file):
    with Manager(local_workers=0, key_file=key_file) as m:
        old = RawPeer(m.address, m.key)
        try:
            other = protocol.new_session()
            old.send(protocol.Heartbeat(), session=other)
            reply = answer(m, old)
            assert isinstance(reply, protocol.Refuse), reply
            assert "another run" in reply.reason and other.hex()[:12] in reply.reason
            assert m.workers() == []
        finally:
            old.close()


def test_results_payload_of_a_dropped_message_is_never_unpickled(tmp_path):
    sentinel = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    with Manager(local_workers=0) as m:
        a = RawPeer(m.address, m.key)
        try:
            a.join(m)
            m.submit(tasks.square, 3)
            tid, frames = _result_frames(a, m, None)
            frames[-1] = pickle.dumps(Boom())  # tampered payload: the signature fails
            a.send(frames)
            _pump(m)
            assert m.wait(timeout=0.3) == []
            assert m.endpoint.dropped == 1
            assert not sentinel.exists()
        finally:
            a.close()


def test_status_query_is_answered_outside_the_session_and_forgotten():
    import threading

    from hep_executor.engine import query_status

    with Manager(local_workers=0) as m:
        m.submit(tasks.square, 1)
        answers = []
        asker = threading.Thread(target=lambda: answers.append(query_status(m.address, m.key, timeout=10)))
        asker.start()
        while asker.is_alive():
            _pump(m, 0.05)
        asker.join()
        assert answers[0]["tasks_waiting"] == 1 and answers[0]["workers"] == 0
        assert m.endpoint._heard == {} and m.endpoint._sent == {}  # no state kept per status client
