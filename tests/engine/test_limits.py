"""The manager's message limit: big unauthenticated frames are never held, big results fail by name."""

import os

import zmq

from hep_executor import Manager
from hep_executor.errors import RemoteTaskError
from tests.engine import tasks
from tests.helpers import drain


def _random_bytes(n):
    return os.urandom(n)  # incompressible: the frame is as large as the value


def test_a_result_over_the_message_limit_fails_naming_the_setting_and_the_worker_stays():
    with Manager(local_workers=1, max_message_mb=1) as m:
        big = m.submit(_random_bytes, 3 * 2**20)
        small = m.submit(tasks.pid_of_worker)
        results = {r.id: r for r in drain(m)}
        assert isinstance(results[big].error, RemoteTaskError)
        message = str(results[big].error)
        assert "max_message_mb" in message and "3 MB" in message
        assert results[small].ok
        assert len(m.workers()) == 1 and m.workers()[0]["pid"] == results[small].value


def _garbage_from_a_stranger(address, frame_bytes):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(address)
    sock.send_multipart([b"s" * 32, b"e" * 25, b"h" * frame_bytes])
    return ctx, sock


def test_an_unauthenticated_frame_over_the_limit_is_dropped_before_it_is_read():
    with Manager(local_workers=0, max_message_mb=1) as m:
        ctx, sock = _garbage_from_a_stranger(m.address, 100)
        m.wait_for_workers(1, timeout=1.5)
        assert m.endpoint.dropped == 1  # a small one reaches the signature check
        big_ctx, big_sock = _garbage_from_a_stranger(m.address, 2 * 2**20)
        m.wait_for_workers(1, timeout=1.5)
        assert m.endpoint.dropped == 1  # the big one never reached the manager
        for s, c in ((sock, ctx), (big_sock, big_ctx)):
            s.close(0)
            c.term()
