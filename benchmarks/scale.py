"""Scale: the Manager against 10 to 1,000 simulated workers that speak the real protocol.

Run from the repository root::

    python -m benchmarks.scale --quick    # 20,000 tasks per row
    python -m benchmarks.scale            # 100,000 tasks per row
    python -m benchmarks.scale --workers 10,1000 --tasks 50000
    python -m benchmarks.scale --quick --workers 10,1000 --reps 3   # medians of 3

A simulated worker is one DEALER socket with its own identity that says
Hello, registers with ``--slots`` cores, and answers every task at once
with an ``ok`` result (a no-op task), through the same
:class:`~hep_executor.engine._transport.Endpoint` as a real worker. A few
processes hold all of them (``--procs``), so a thousand workers fit on a
small machine. For each worker count it prints:

- ``fill_ms``: one dispatch pass from empty that fills every slot
  (workers x slots tasks waiting, all workers idle), and ``place_ms``
  its placing step alone (the rest is one signed message per worker);
- ``rate``: no-op tasks per second, all submitted at once, then ``wait``
  until empty (as a run submits its chunks);
- ``rate_10k``: the same with at most 10,000 tasks outstanding (submit
  more as results come back): at 1,000 workers of 4 slots that is 2.5
  tasks a slot, so each message carries about 10 tasks and the rate
  measures the cost of a message more than that of a task;
- ``cpu_us``: manager process CPU (all its threads) per task;
- ``rss_mb_100k``: growth of the manager's resident memory per 100,000
  tasks, results consumed (in the ``rate_10k`` run);
- ``floor_rate`` and ``floor_cpu_us``: the ZeroMQ floor of the row
  (:mod:`benchmarks._zmq_floor`): bare pyzmq messages in the same
  pattern (one message each way per batch per worker, as many tasks per
  batch as the manager sends there, peers in as many processes), with no
  signature, JSON, pickle or bookkeeping. It is the most that any manager
  sending one ZeroMQ message per worker per batch could reach on this
  machine.

Then the same rate and CPU for the real Manager with 2 real local
workers. With ``--reps N`` every cell is the median of N repetitions of
its row. After the table come the issue's two verdicts, each PASS or
FAIL: the rate at the largest worker count is at least 80% of the rate
at 10 workers (the smallest count when 10 is not measured), for ``rate``
and again for ``rate_10k``, and the fill at the largest count takes
under 200 ms. The machine's load average
is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import psutil
import zmq

from hep_executor import Manager
from hep_executor.engine import protocol
from hep_executor.engine import pickle_bytes
from hep_executor.engine import Endpoint

from benchmarks._stats import median, print_table, quiet_logging
from benchmarks._tasks import noop
from benchmarks._zmq_floor import floor_rate, peer_processes, per_peer_batch


_COLUMNS = ["workers", "slots", "fill_ms", "place_ms", "rate", "rate_10k", "cpu_us", "rss_mb_100k",
            "floor_rate", "floor_cpu_us"]
#: the issue's targets: rate at the most workers over the rate at 10, and the fill at the most
RATE_RATIO_TARGET = 0.8
FILL_MS_TARGET = 200.0


def _sim_workers(address: str, key: bytes, slots: int, count: int, stop) -> None:
    """Run ``count`` simulated workers in this process until ``stop`` is set."""
    ctx = zmq.Context()
    poller = zmq.Poller()
    workers = {}
    for _ in range(count):
        identity = uuid.uuid4().hex[:12].encode()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, identity)
        sock.connect(address)
        endpoint = Endpoint(sock, key, routed=False, identity=identity)
        endpoint.send(protocol.Hello(protocol.PROTOCOL_VERSION, identity.decode()))
        workers[sock] = endpoint
        poller.register(sock, zmq.POLLIN)
    value = pickle_bytes(None)
    while not stop.is_set():
        for sock, _ in poller.poll(100):
            _serve(workers[sock], slots, value)
    for endpoint in workers.values():
        endpoint.close()
    ctx.term()


def _serve(endpoint: Endpoint, slots: int, value: bytes) -> None:
    while (got := endpoint.recv()) is not None:
        msg = got[1]
        if isinstance(msg, protocol.Session):
            endpoint.join(bytes.fromhex(msg.session))
            endpoint.send(protocol.Register(protocol.PROTOCOL_VERSION, endpoint.identity.decode(),
                                            "sim", os.getpid(), slots, 4000 * slots, 10000))
        elif isinstance(msg, protocol.Tasks):
            items = [{"id": t["id"], "status": "ok", "wall": 0.0, "cpu": 0.0, "peak_mb": 1.0,
                      "compressed": False, "slot": "sim/0", "started": 0.0, "error": ""}
                     for t in msg.items]
            endpoint.send(protocol.Results(items), [value] * len(items))


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _drain(m: Manager) -> int:
    done = 0
    while not m.empty():
        done += len(m.wait(timeout=5))
    return done


def _measure_fill(m: Manager, slots_total: int) -> tuple[float, float]:
    """Milliseconds of one dispatch pass that fills every slot from empty, and of its placing alone.

    The pass is the manager's own two steps: place the waiting tasks on
    workers, then send each worker its batch (one signed message each).
    """
    for i in range(slots_total):
        m.submit(noop, i, category="fill")
    batches: dict = {}
    t0 = time.perf_counter()
    m._place_waiting(m.table.waiting, batches)
    t1 = time.perf_counter()
    sent = m._send_batches(batches)
    t2 = time.perf_counter()
    assert sent == slots_total, f"one pass sent {sent} of {slots_total}"
    _drain(m)
    return (t2 - t0) * 1000, (t1 - t0) * 1000


def _run_window(m: Manager, tasks: int, window: int = 10_000) -> None:
    """Run ``tasks`` no-op tasks with at most ``window`` outstanding, results consumed."""
    submitted = done = 0
    while done < tasks:
        while submitted < tasks and submitted - done < window:
            m.submit(noop, submitted)
            submitted += 1
        done += len(m.wait(timeout=5))


def _measure_rate(m: Manager, tasks: int, window: int) -> tuple[float, float, float]:
    """``(tasks per second, manager CPU microseconds per task, RSS growth MB per 100k tasks)``.

    At most ``window`` tasks are outstanding. A first window of 10,000
    tasks warms the manager up; the RSS growth is measured from there
    (the issue's target: 1M tasks within 100 MB of the RSS after 10k).
    """
    _run_window(m, 10_000)
    rss0, cpu0, t0 = _rss_mb(), time.process_time(), time.perf_counter()
    _run_window(m, tasks, window)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert m.empty()
    return tasks / wall, cpu / tasks * 1e6, (_rss_mb() - rss0) * 100_000 / tasks


def run_simulated(n_workers: int, slots: int, tasks: int, procs: int) -> dict:
    """Figures for ``n_workers`` simulated workers of ``slots`` slots."""
    with Manager(local_workers=0, heartbeat_timeout=600, worker_timeout=900) as m:
        with peer_processes(_sim_workers, (m.address, m.key, slots), n_workers, procs):
            joined = m.wait_for_workers(n_workers, timeout=120)
            assert joined == n_workers, f"{joined} of {n_workers} simulated workers joined"
            fill_ms, place_ms = _measure_fill(m, n_workers * slots)
            rate_10k, _, rss = _measure_rate(m, tasks, window=10_000)  # first: its RSS growth is the run's
            rate, cpu_us, _ = _measure_rate(m, tasks, window=tasks)
    floor, floor_cpu = floor_rate(n_workers, per_peer_batch(n_workers, slots), tasks, procs)
    return {"workers": n_workers, "slots": n_workers * slots, "fill_ms": fill_ms, "place_ms": place_ms,
            "rate": rate, "rate_10k": rate_10k, "cpu_us": cpu_us, "rss_mb_100k": rss,
            "floor_rate": floor, "floor_cpu_us": floor_cpu}


def run_real(tasks: int) -> dict:
    """Rate and CPU per task of the real Manager with 2 real local workers."""
    with Manager(local_workers=2) as m:
        assert m.wait_for_workers(2) == 2
        rate_10k, _, rss = _measure_rate(m, tasks, window=10_000)
        rate, cpu_us, _ = _measure_rate(m, tasks, window=tasks)
    return {"workers": "2 real", "slots": 2, "fill_ms": float("nan"), "place_ms": float("nan"),
            "rate": rate, "rate_10k": rate_10k, "cpu_us": cpu_us, "rss_mb_100k": rss,
            "floor_rate": float("nan"), "floor_cpu_us": float("nan")}


def median_row(runs: list[dict]) -> dict:
    """One row of the table: each number the median over the repetitions ``runs``, labels from the first."""
    return {c: median(r[c] for r in runs) if isinstance(runs[0][c], float) else runs[0][c]
            for c in _COLUMNS}


def verdicts(rows: list[dict]) -> list[str]:
    """The target lines (rate ratio twice, fill time) over the simulated ``rows``, each ending PASS or FAIL."""
    base = next((r for r in rows if r["workers"] == 10), min(rows, key=lambda r: r["workers"]))
    top = max(rows, key=lambda r: r["workers"])
    return [
        *(_ratio_line(column, base, top) for column in ("rate", "rate_10k")),
        f"fill of {top['slots']} slots at {top['workers']} workers: {top['fill_ms']:.0f} ms "
        f"(target < {FILL_MS_TARGET:.0f} ms): {'PASS' if top['fill_ms'] < FILL_MS_TARGET else 'FAIL'}",
    ]


def _ratio_line(column: str, base: dict, top: dict) -> str:
    ratio = top[column] / base[column]
    return (f"{column} at {top['workers']} workers / {column} at {base['workers']}: {top[column]:,.0f} / "
            f"{base[column]:,.0f} = {ratio:.0%} (target >= {RATE_RATIO_TARGET:.0%}): "
            f"{'PASS' if ratio >= RATE_RATIO_TARGET else 'FAIL'}")


def _load_average() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 tasks per row instead of 100,000")
    parser.add_argument("--workers", default=None, help="comma-separated worker counts")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--procs", type=int, default=4, help="processes holding the simulated workers")
    parser.add_argument("--reps", type=int, default=1, help="repetitions per row (medians are shown)")
    args = parser.parse_args(argv)
    quiet_logging()
    counts = [int(c) for c in (args.workers or "10,100,1000").split(",")]
    tasks = args.tasks or (20_000 if args.quick else 100_000)
    reps = max(1, args.reps)
    load_before = _load_average()
    simulated = [median_row([run_simulated(n, args.slots, tasks, args.procs) for _ in range(reps)])
                 for n in counts]
    real = median_row([run_real(min(tasks, 20_000)) for _ in range(reps)])
    rows = [[r[c] for c in _COLUMNS] for r in (*simulated, real)]
    load = f"load average {load_before} before, {_load_average()} after"
    print_table(f"scale: {tasks} no-op tasks per row, medians of {reps}; {load}", _COLUMNS, rows)
    for line in verdicts(simulated):
        print(f"{line} ({load})")


if __name__ == "__main__":
    main()
