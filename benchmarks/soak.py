"""Fault soak: random SIGKILL and SIGSTOP of slots and workers while tasks of random length run.

Run from the repository root::

    python -m benchmarks.soak                 # 10 minutes, 3 local workers
    python -m benchmarks.soak --duration 60   # the length CI runs (tests/engine/test_soak.py)

Tasks sleep a random time and return a value derived from their input. A
chaos thread picks, every second or so, one of: SIGKILL a slot process,
SIGSTOP a slot (its task's ``max_wall_s`` must catch it), SIGKILL a worker,
SIGSTOP a worker shorter than the manager's heartbeat timeout, SIGSTOP a
worker longer than it (the manager removes it; it is woken later). When
the time is up, submitting stops and every task must come back.

Verdict: every task comes back exactly once, with the right value or with
a named error (:class:`TaskTimeoutError`, :class:`WorkerLostError`); no
hang (the drain has a deadline); no process left after the manager closes.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import signal
import threading
import time

import psutil

from hep_executor import HepExecutorError, Manager, TaskTimeoutError, WorkerLostError

log = logging.getLogger(__name__)

ACTIONS = ("kill-slot", "stop-slot", "kill-worker", "pause-worker", "stop-worker")
NAMED_ERRORS = (TaskTimeoutError, WorkerLostError)


def task(i: int, seconds: float) -> int:
    """A task of the soak: sleep, then return a value the driver can check."""
    time.sleep(seconds)
    return 3 * i + 1


def _workers() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children() if _alive(p) and "hep_executor" in " ".join(_cmdline(p))]


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, sig: int) -> bool:
    try:
        proc.send_signal(sig)
        return True
    except psutil.Error:
        return False


class Chaos(threading.Thread):
    """Hurts a random slot or worker every ``interval`` seconds (jittered) until stopped."""

    def __init__(self, rng: random.Random, interval: float, heartbeat_timeout: float):
        super().__init__(name="soak-chaos", daemon=True)
        self.rng, self.interval, self.heartbeat_timeout = rng, interval, heartbeat_timeout
        self.done = threading.Event()
        self.counts: collections.Counter = collections.Counter()
        self._paused: list[tuple[float, psutil.Process]] = []

    def run(self) -> None:
        while not self.done.wait(self.interval * self.rng.uniform(0.5, 1.5)):
            self._wake_due(time.monotonic())
            workers = _workers()
            if workers:
                self._hurt(self.rng.choice(ACTIONS), self.rng.choice(workers))
        self._wake_due(float("inf"))

    def _hurt(self, action: str, worker: psutil.Process) -> None:
        slots = [p for p in _children(worker) if _alive(p)]
        if action.endswith("-slot") and not slots:
            return
        now = time.monotonic()
        if action == "kill-slot":
            done = _signal(self.rng.choice(slots), signal.SIGKILL)
        elif action == "stop-slot":
            done = _signal(self.rng.choice(slots), signal.SIGSTOP)
        elif action == "kill-worker":
            done = _signal(worker, signal.SIGKILL)
        else:
            pause = 0.3 * self.heartbeat_timeout if action == "pause-worker" else 1.5 * self.heartbeat_timeout
            done = _signal(worker, signal.SIGSTOP)
            self._paused.append((now + pause, worker))
        if done:
            self.counts[action] += 1

    def _wake_due(self, now: float) -> None:
        due = [w for t, w in self._paused if t <= now]
        self._paused = [(t, w) for t, w in self._paused if t > now]
        for worker in due:
            _signal(worker, signal.SIGCONT)


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children()
    except psutil.Error:
        return []


def _submit_some(m: Manager, rng: random.Random, submitted: dict, backlog: int, task_s: float) -> None:
    while m.status()["tasks_waiting"] < backlog:
        i = len(submitted)
        tid = m.submit(task, i, rng.uniform(0, task_s), max_wall_s=max(2.0, 10 * task_s), retries=2,
                       category="soak")
        submitted[tid] = 3 * i + 1


def _check(results: list, submitted: dict) -> dict:
    seen = collections.Counter(r.id for r in results)
    twice = sorted(t for t, n in seen.items() if n > 1)
    missing = sorted(set(submitted) - set(seen))
    wrong, unnamed, errors = [], [], collections.Counter()
    for r in results:
        if r.error is None:
            if r.value != submitted.get(r.id):
                wrong.append(r.id)
        elif isinstance(r.error, NAMED_ERRORS) and str(r.error):
            errors[type(r.error).__name__] += 1
        else:
            unnamed.append(f"{r.id}: {type(r.error).__name__}: {r.error}")
    return {"submitted": len(submitted), "returned": len(results), "twice": twice[:20],
            "missing": missing[:20], "n_missing": len(missing), "wrong": wrong[:20],
            "unnamed": unnamed[:20], "errors": dict(errors)}


def soak(duration: float = 600.0, workers: int = 3, cores: int = 2, seed: int = 1,
         chaos_interval: float = 1.0, task_s: float = 0.3, drain_s: float = 120.0) -> dict:
    """Run the soak; return its summary (see the module docstring for the verdict)."""
    rng = random.Random(seed)
    heartbeat_timeout = 4.0
    submitted: dict[int, int] = {}
    results: list = []
    chaos = Chaos(rng, chaos_interval, heartbeat_timeout)
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # servers of others: not ours
    start = time.monotonic()
    error = None
    with Manager(local_workers=workers, worker_cores=cores, heartbeat_interval=0.5,
                 heartbeat_timeout=heartbeat_timeout, max_worker_kills=5) as m:
        m.wait_for_workers(workers, timeout=60)
        chaos.start()
        try:
            _run_and_drain(m, chaos, submitted, results, start + duration, drain_s, task_s, workers * cores)
        except HepExecutorError as exc:  # the run gave up: a failed soak, said as such
            error = f"{type(exc).__name__}: {exc}"
        finally:
            chaos.done.set()
            chaos.join()
        hung = not m.empty()
        stats = dict(m.stats)
    summary = _check(results, submitted)
    summary.update(hung=hung, error=error, chaos=dict(chaos.counts), manager_stats=stats,
                   seconds=round(time.monotonic() - start, 1), leftover=_leftover_after(10.0, before))
    summary["ok"] = not (hung or error or summary["twice"] or summary["n_missing"] or summary["wrong"]
                         or summary["unnamed"] or summary["leftover"])
    return summary


def _run_and_drain(m: Manager, chaos: Chaos, submitted: dict, results: list, until: float, drain_s: float,
                   task_s: float, slots: int) -> None:
    """Submit and collect under chaos until ``until``; then stop the chaos and collect the rest."""
    while time.monotonic() < until:
        _submit_some(m, chaos.rng, submitted, 4 * slots, task_s)
        results.extend(m.wait(timeout=0.5))
    chaos.done.set()
    chaos.join()
    deadline = time.monotonic() + drain_s
    while not m.empty() and time.monotonic() < deadline:
        results.extend(m.wait(timeout=1.0))


def _leftover_after(grace: float, before: set) -> list[int]:
    """Child processes (not among ``before``) still alive ``grace`` seconds after the manager closed."""
    deadline = time.monotonic() + grace
    while True:
        left = [p for p in psutil.Process().children(recursive=True) if _alive(p) and p.pid not in before]
        for p in left:
            _signal(p, signal.SIGCONT)
        if not left or time.monotonic() > deadline:
            return [p.pid for p in left]
        time.sleep(0.2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos (600)")
    parser.add_argument("--workers", type=int, default=3, help="local workers (3)")
    parser.add_argument("--cores", type=int, default=2, help="slots per worker (2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=4.0,
                        help="mean seconds between faults (4: about 30 worker kills in 10 minutes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print(f"soak: {args.duration:.0f} s, {args.workers} workers x {args.cores} slots, seed {args.seed}, "
          f"load {os.getloadavg()[0]:.2f}")
    summary = soak(args.duration, args.workers, args.cores, args.seed, args.interval)
    print(json.dumps(summary, indent=1))
    print(f"load after {os.getloadavg()[0]:.2f}; verdict: {'PASS' if summary['ok'] else 'FAIL'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
