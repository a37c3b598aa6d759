"""The worker process: joins a manager and runs its tasks in slot processes.

Start one with ``hep-executor worker --manager tcp://HOST:PORT --key-file
KEY --cores 8 --memory 16000`` or ``python -m hep_executor.worker ...``.

The worker registers with its protocol version and resources, then loops
over a few named steps (:meth:`Worker.step`): take messages from the
manager, take results from slots, stop slots over their memory, hand
queued tasks to free slots, send results, send a heartbeat. It runs one
slot process per core (see :mod:`hep_executor.engine._slot`), so modules and
caches stay warm from task to task. It exits by itself when the manager
says so, goes silent, or (for local workers) when its parent process is
gone.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass

import zmq

from hep_executor.engine import _monitor as monitor
from hep_executor.engine import _protocol as protocol
from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError
from hep_executor.engine._keys import KEY_ENV, load_key
from hep_executor.engine._pipes import SlotWriter
from hep_executor.engine._slot import slot_main
from hep_executor.engine._worker_state import WorkerState
from hep_executor.engine._transport import Endpoint, connect_dealer

__all__ = ["Worker", "main"]

DEFAULT_SLOT_KEYS = 4  # affinity keys remembered per slot (the manager passes its caller's cache size)
_TREE_SCAN_S = 1.0  # how often the process trees under busy slots are read (one /proc scan)

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REFUSED, EXIT_MANAGER_LOST = 0, 3, 4


@dataclass
class _SlotProcess:
    """A slot's process and the worker's ends of its pipe."""

    proc: multiprocessing.Process
    conn: object
    writer: SlotWriter


class Worker:
    """A worker: one connection to the manager, ``cores`` slot processes.

    What to run where, and who is blamed for what, is decided by its
    :class:`~hep_executor.engine._worker_state.WorkerState`; the worker
    moves messages between the manager, that state and the slot processes.

    Parameters
    ----------
    manager : str
        The manager's address, ``tcp://HOST:PORT``.
    key : bytes
        The run's secret (from the key file).
    cores, memory_mb, disk_mb : int
        What this worker offers; the manager packs tasks into it.
    heartbeat_interval : float
        Seconds between heartbeats when nothing else is sent.
    manager_timeout : float
        Exit when the manager has been silent this long (registration included).
    parent_pid : int, optional
        Exit when this process is no longer our parent (local workers).
    curve : bool
        Connect over ZeroMQ CURVE (the manager runs with ``curve=True``).
    stopped_slot_s : float
        A slot whose process stays stopped this long under a task (SIGSTOP,
        a read from the terminal) is killed and restarted; its task is
        reported lost and runs again elsewhere (each time counts against
        it, as a crash does).
    """

    def __init__(self, manager: str, key: bytes, *, cores: int = 1, memory_mb: int = 2000,
                 disk_mb: int = 4000, heartbeat_interval: float = 5.0,
                 manager_timeout: float = 60.0, parent_pid: int | None = None,
                 slot_keys: int = DEFAULT_SLOT_KEYS, curve: bool = False, stopped_slot_s: float = 60.0):
        if cores < 1 or memory_mb < 1:
            msg = f"a worker needs at least 1 core and 1 MB of memory (got cores={cores}, memory={memory_mb})"
            raise ConfigError(msg)
        self.manager = manager
        self.key = key
        self.cores, self.memory_mb, self.disk_mb = cores, memory_mb, disk_mb
        self.heartbeat_interval = heartbeat_interval
        self.manager_timeout = manager_timeout
        self.parent_pid = parent_pid
        self.curve = curve
        self.worker_id = uuid.uuid4().hex[:12]
        self.state = WorkerState(self.worker_id, socket.gethostname(), cores, slot_keys)
        self.state.lifetime_peaks = not monitor.PEAKS_PER_TASK
        self.state.stopped_slot_s = stopped_slot_s
        self.state.memory_mb = memory_mb
        self._rss_warned = False
        self._mp = multiprocessing.get_context("fork")
        self.slots: list[_SlotProcess] = []
        self.stopping: str | None = None
        self.exit_code = EXIT_OK
        self._last_heard = time.monotonic()
        self._last_sent = time.monotonic()
        self._last_tree_scan = 0.0
        self._ctx = None
        self.endpoint: Endpoint | None = None
        self._poller = zmq.Poller()

    # ------------------------------------------------------------ slot processes
    def _start_slot(self, index: int) -> _SlotProcess:
        parent, child = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(target=slot_main, args=(child, index, os.getpid(), parent), daemon=True,
                                name=f"hep-slot-{index}")
        proc.start()
        child.close()
        self._poller.register(parent.fileno(), zmq.POLLIN)
        return _SlotProcess(proc, parent, SlotWriter(parent, f"hep-slot-writer-{index}"))

    def _restart_slot(self, index: int) -> None:
        slot = self.slots[index]
        try:
            self._poller.unregister(slot.conn.fileno())
        except (KeyError, OSError, ValueError):
            pass
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(timeout=5)
        slot.writer.close()
        slot.conn.close()
        self.slots[index] = self._start_slot(index)

    def _kill_slot(self, index: int) -> None:
        """Kill a slot and the processes its task started (they would outlive it)."""
        proc = self.slots[index].proc
        for pid in [*self.state.slots[index].children, *monitor.descendants([proc.pid])[proc.pid]]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.kill()
        proc.join(timeout=5)

    # ------------------------------------------------------------ steps
    def _process_manager_messages(self) -> None:
        while True:
            got = self.endpoint.recv()
            if got is None:
                return
            _, msg, payloads = got
            if isinstance(msg, Exception):
                continue
            self._last_heard = time.monotonic()
            if isinstance(msg, protocol.Tasks):
                functions = dict(zip(msg.functions, payloads))
                self.state.tasks_arrived(functions, zip(msg.items, payloads[len(msg.functions):]))
            elif isinstance(msg, protocol.Cancel):
                for index in self.state.cancel(set(msg.ids)):
                    self._restart_slot(index)
            elif isinstance(msg, protocol.Shutdown):
                self.stopping = msg.reason or "manager asked to stop"
            elif isinstance(msg, protocol.Refuse):
                self._refused(msg.reason)

    def _process_slot_results(self, ready: set) -> None:
        for index, slot in enumerate(list(self.slots)):
            if slot.conn.fileno() not in ready:
                continue
            while True:
                try:
                    if not slot.conn.poll():
                        break
                    report = pickle.loads(slot.conn.recv_bytes())
                except (EOFError, OSError):
                    self._slot_died(index)
                    break
                if report[0] == "warm":
                    self.state.slot_warm(index, report[1])
                else:
                    self.state.slot_result(index, report, time.monotonic())

    def _slot_died(self, index: int, status: str = "lost", note: str = "", wall: float = 0.0) -> None:
        """The slot's process ended under its running task: report it, requeue the rest, restart it."""
        proc = self.slots[index].proc
        proc.join(timeout=5)  # the exit code is None until the process is reaped
        note = note or (f"the task's process ended {describe_exit(proc.exitcode)} "
                        "(crashed, called os._exit, or was killed)")
        self.state.slot_died(index, status, note, wall)
        self._restart_slot(index)

    def _scan_trees(self, busy: list[int]) -> None:
        """Once a second, whether each busy slot's process is stopped, what its task started, and their memory."""
        now = time.monotonic()
        if now - self._last_tree_scan < _TREE_SCAN_S:
            return
        self._last_tree_scan = now
        found = monitor.descendants([self.slots[i].proc.pid for i in busy])
        for index in busy:
            self.state.slot_seen(index, monitor.is_stopped(self.slots[index].proc.pid), now)
            pids = found.get(self.slots[index].proc.pid, [])
            self.state.children_seen(index, pids, sum(monitor.rss_mb(pid) for pid in pids))

    def _enforce_limits(self) -> None:
        busy = self.state.busy()
        if not busy:
            return
        self._scan_trees(busy)
        rss = {i: monitor.rss_mb(self.slots[i].proc.pid) for i in busy}
        if not self._rss_warned and any(v <= 0 for v in rss.values()):
            self._rss_warned = True
            log.warning("worker %s cannot read the memory of its slot processes: memory allocations are "
                        "not enforced here", self.worker_id)
        for stop in self.state.over_limits(time.monotonic(), rss):
            if self.slots[stop.index].conn.poll():
                continue  # a result waits in the pipe: take it first (the sample may be of a finished task)
            log.warning("task %s: %s: stopping it", self.state.slots[stop.index].head()["id"], stop.note)
            self._kill_slot(stop.index)
            self._slot_died(stop.index, stop.status, stop.note, stop.wall)

    def _feed_slots(self) -> None:
        for write in self.state.feed(time.monotonic()):
            writer = self.slots[write.index].writer
            for message in write.messages:
                writer.send(pickle.dumps(message))

    def _flush_results(self) -> None:
        """Send finished tasks, and which tasks run now when that changed (the manager blames only those)."""
        batch = self.state.flush()
        if batch is not None:
            items, payloads, running = batch
            self.endpoint.send(protocol.Results(items, running, self.state.warm_to_report()), payloads)
            self._last_sent = time.monotonic()

    def _heartbeat_and_watch(self) -> None:
        now = time.monotonic()
        if now - self._last_sent > self.heartbeat_interval:
            self.endpoint.send(protocol.Heartbeat())
            self._last_sent = now
        if now - self._last_heard > self.manager_timeout:
            log.error("manager %s silent for %.0f s: exiting", self.manager, now - self._last_heard)
            self.stopping, self.exit_code = "manager silent", EXIT_MANAGER_LOST
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.stopping, self.exit_code = "parent process gone", EXIT_MANAGER_LOST

    def step(self, timeout: float) -> None:
        """One pass of the worker's loop."""
        watching = self.state.watching()
        events = dict(self._poller.poll(int(1000 * (min(timeout, 0.05) if watching else timeout))))
        self._process_manager_messages()
        self._process_slot_results({fd for fd in events if isinstance(fd, int)})
        self._enforce_limits()
        self._feed_slots()
        self._flush_results()
        self._heartbeat_and_watch()

    # ------------------------------------------------------------ life
    def _register(self) -> bool:
        """Ask the run's session (Hello), register in it, wait for the Welcome."""
        self.endpoint.send(protocol.Hello(protocol.PROTOCOL_VERSION, self.worker_id))
        deadline = time.monotonic() + self.manager_timeout
        while time.monotonic() < deadline and not self.stopping:
            if not self.endpoint.poll(0.2):
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    return False
                continue
            msg = self._registration_reply()
            if isinstance(msg, protocol.Session):
                self.endpoint.join(bytes.fromhex(msg.session))
                self.endpoint.send(protocol.Register(
                    protocol.PROTOCOL_VERSION, self.worker_id, socket.gethostname(), os.getpid(),
                    self.cores, self.memory_mb, self.disk_mb, os.cpu_count() or 0,
                    monitor.total_memory_mb()))
            elif isinstance(msg, protocol.Refuse):
                self._refused(msg.reason)
                return False
            elif isinstance(msg, protocol.Welcome):
                self.heartbeat_interval = msg.heartbeat_interval
                # the smaller wins: a worker started with a short --manager-timeout keeps it
                self.manager_timeout = min(self.manager_timeout, msg.worker_timeout)
                self.state.max_result_bytes = msg.max_message_mb * 2**20
                self._last_heard = time.monotonic()
                return True
        if self.stopping:
            log.info("worker %s stopped before it registered (%s)", self.worker_id, self.stopping)
            return False
        log.error("no answer from manager %s within %.0f s (is the address right, the key the same, and "
                  "--curve given to both or neither?)", self.manager, self.manager_timeout)
        self.exit_code = EXIT_MANAGER_LOST
        return False

    def _registration_reply(self):
        """The next message from the manager, or a refusal sent unsigned (our key is not its key)."""
        got = self.endpoint.recv()
        if got is None:
            return None
        _, msg, frames = got
        if isinstance(msg, AuthenticationError):
            try:
                msg, _ = protocol.decode(frames, b"", self.endpoint.identity)
            except ProtocolError:
                return None
            return msg if isinstance(msg, protocol.Refuse) else None
        return None if isinstance(msg, Exception) else msg

    def _refused(self, reason: str) -> None:
        log.error("manager %s refused this worker: %s", self.manager, reason)
        print(f"hep-executor worker: refused by {self.manager}: {reason}", file=sys.stderr)
        self.exit_code = EXIT_REFUSED
        self.stopping = "refused"

    def run(self) -> int:
        """Register and serve until told to stop; return the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.slots = [self._start_slot(i) for i in range(self.cores)]
        self._ctx = zmq.Context()
        sock = connect_dealer(self._ctx, self.manager, self.worker_id.encode(),
                              curve_key=self.key if self.curve else None)
        self.endpoint = Endpoint(sock, self.key, routed=False, identity=self.worker_id.encode())
        self._poller.register(sock, zmq.POLLIN)
        try:
            if self._register():
                if self.state.lifetime_peaks:
                    log.warning("worker %s cannot reset the kernel's peak-memory mark (/proc/self/clear_refs): "
                                "task peaks are the slots' lifetime peaks, an upper bound", self.worker_id)
                log.info("worker %s joined %s with %d cores, %d MB",
                         self.worker_id, self.manager, self.cores, self.memory_mb)
                while not self.stopping:
                    self.step(self.heartbeat_interval / 2)
                if self.exit_code == EXIT_OK:
                    self.endpoint.send(protocol.Bye(self.stopping or ""))
        finally:
            self._stop_slots()
            self.endpoint.close()
            self._ctx.term()
        return self.exit_code

    def _on_signal(self, signum, frame) -> None:
        self.stopping = f"signal {signum}"

    def _stop_slots(self) -> None:
        for slot in self.slots:
            slot.writer.send(pickle.dumps(("stop",)))
        deadline = time.monotonic() + 2.0
        for slot in self.slots:
            slot.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(timeout=2)
            slot.writer.close(timeout=0.5)


def describe_exit(code: int | None) -> str:
    """``with exit code 17``, ``by signal SIGSEGV``, or ``with an unknown status`` for ``code``."""
    if code is None:
        return "with an unknown status"
    if code < 0:
        try:
            return f"by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"by signal {-code}"
    return f"with exit code {code}"


def preload(modules) -> None:
    """Import ``modules`` in this process; slots forked later inherit them warm."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("cannot preload %s: %s", name, exc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the worker's command-line options to ``parser``."""
    parser.add_argument("--manager", required=True, help="manager address, tcp://HOST:PORT")
    parser.add_argument("--key-file", help="key file shared with the manager (hep-executor keygen)")
    parser.add_argument("--cores", type=int, default=1, help="cores to offer (one slot each)")
    parser.add_argument("--memory", type=int, default=2000, help="memory to offer, MB")
    parser.add_argument("--disk", type=int, default=4000, help="disk to offer, MB")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval, s")
    parser.add_argument("--manager-timeout", type=float, default=60.0,
                        help="exit when the manager is silent this long, s")
    parser.add_argument("--preload", default="",
                        help="modules to import before starting slots (comma-separated), so that "
                             "every slot, a replacement too, starts with them warm")
    parser.add_argument("--slot-keys", type=int, default=DEFAULT_SLOT_KEYS,
                        help="affinity keys (open files) remembered per slot")
    parser.add_argument("--curve", action="store_true",
                        help="encrypt the connection with ZeroMQ CURVE (the manager runs with curve=True)")
    parser.add_argument("--stopped-slot-s", type=float, default=60.0,
                        help="a slot whose process stays stopped (SIGSTOP, a terminal read) this long under a task "
                             "is killed and restarted, and its task reported lost (run again elsewhere), s")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="WARNING")


def run_from_args(args: argparse.Namespace) -> int:
    """Start a worker from parsed command-line options; return its exit code."""
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    key = load_key(None, args.key_file, who="a worker")
    os.environ.pop(KEY_ENV, None)  # the slots run user code: they never see the key
    preload(m for m in args.preload.split(",") if m)
    worker = Worker(args.manager, key, cores=args.cores, memory_mb=args.memory, disk_mb=args.disk,
                    heartbeat_interval=args.heartbeat, manager_timeout=args.manager_timeout,
                    parent_pid=args.parent_pid, slot_keys=args.slot_keys, curve=args.curve,
                    stopped_slot_s=args.stopped_slot_s)
    return worker.run()


def main(argv=None) -> int:
    """``python -m hep_executor.worker``."""
    parser = argparse.ArgumentParser(prog="hep-executor worker", description="Run a worker.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ConfigError as exc:
        print(f"hep-executor worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
