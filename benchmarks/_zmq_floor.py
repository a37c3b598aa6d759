"""The ZeroMQ floor of the scale harness: bare pyzmq messages in the Manager's pattern, nothing else.

A ROUTER socket in this process, and ``n`` DEALER peers in a few
processes that send every message straight back. The ROUTER keeps a
batch of ``per_peer`` tasks with each peer and answers each returned
batch with a new one to the same peer: one message each way per batch,
as the Manager does in the scale harness's steady state (10,000 tasks in
flight, at most ``cores x (1 + 64)`` with one worker). There is no
signature, JSON, pickle or bookkeeping, so the rate is the most that any
manager sending one ZeroMQ message per worker per batch could reach on
this machine, with its peers sharing its cores as the simulated workers do.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time

import zmq

__all__ = ["floor_rate", "peer_processes", "per_peer_batch"]

#: bytes per task in a batch (a Tasks item with its pickled arguments is about this)
TASK_BYTES = 100


def per_peer_batch(n_peers: int, slots: int, window: int = 10_000, prefetch: int = 64) -> int:
    """Tasks one worker holds in the harness's steady state: its share of the window, at most its cap."""
    return max(1, min(slots * (1 + prefetch), window // n_peers))


@contextlib.contextmanager
def peer_processes(target, args: tuple, n_peers: int, procs: int):
    """Run ``target(*args, count, stop)`` in up to ``procs`` processes that hold ``n_peers`` peers together.

    Yields nothing; on leaving, ``stop`` is set and the processes are
    joined (killed after 10 s).
    """
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    per = [n_peers // procs + (i < n_peers % procs) for i in range(procs)]
    sims = [spawn.Process(target=target, args=(*args, n, stop), daemon=True) for n in per if n]
    for p in sims:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in sims:
            p.join(10)
            if p.is_alive():
                p.kill()


def _echo_peers(address: str, count: int, stop) -> None:
    ctx = zmq.Context()
    poller = zmq.Poller()
    socks = []
    for _ in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        sock.send(b"hello")
        poller.register(sock, zmq.POLLIN)
        socks.append(sock)
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                sock.send_multipart(frames)
    for sock in socks:
        sock.close(0)
    ctx.term()


def _serve(router, peers: list, batch: bytes, per_peer: int, tasks: int) -> tuple[float, float]:
    """Wall seconds and process CPU seconds to get ``tasks`` tasks back, one batch out per batch in."""
    for peer in peers:
        router.send_multipart([peer, batch])
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = 0
    while done < tasks:
        peer, _ = router.recv_multipart()
        done += per_peer
        router.send_multipart([peer, batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for _ in peers:  # the batches still out
        router.recv_multipart()
    return wall, cpu


def floor_rate(n_peers: int, per_peer: int, tasks: int, procs: int = 4) -> tuple[float, float]:
    """``(tasks per second, process CPU microseconds per task)`` of the bare pattern with ``n_peers`` peers."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with peer_processes(_echo_peers, (f"tcp://127.0.0.1:{port}",), n_peers, procs):
            peers = [router.recv_multipart()[0] for _ in range(n_peers)]
            batch = bytes(per_peer * TASK_BYTES)
            _serve(router, peers, batch, per_peer, 10_000)  # warm-up, as the harness's first window
            wall, cpu = _serve(router, peers, batch, per_peer, tasks)
    finally:
        router.close(0)
        ctx.term()
    return tasks / wall, cpu / tasks * 1e6
