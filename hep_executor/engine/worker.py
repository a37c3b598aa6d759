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
import collections
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field

import zmq

from hep_executor.engine import _monitor as monitor
from hep_executor.engine import _protocol as protocol
from hep_executor.errors import AuthenticationError, ConfigError, ProtocolError
from hep_executor.engine._keys import KEY_ENV, load_key
from hep_executor.engine._pipes import SlotWriter
from hep_executor.engine._slot import slot_main
from hep_executor.engine._state import remember_key
from hep_executor.engine._transport import Endpoint, connect_dealer

__all__ = ["Worker", "main"]

DEFAULT_SLOT_KEYS = 4  # affinity keys remembered per slot (the manager passes its caller's cache size)
_SLOT_LOOKAHEAD = 16  # queued tasks looked at for one whose key a free slot holds
_TREE_SCAN_S = 1.0  # how often the process trees under busy slots are read (one /proc scan)

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REFUSED, EXIT_MANAGER_LOST = 0, 3, 4


@dataclass
class _Slot:
    index: int
    proc: multiprocessing.Process
    conn: object
    writer: SlotWriter
    functions: set = field(default_factory=set)
    queue: collections.deque = field(default_factory=collections.deque)  # items sent; head runs
    peak_seen: float = 0.0
    head_since: float = 0.0  # time.monotonic() when the task at the head of ``queue`` started
    children: list = field(default_factory=list)  # pids the running task started, last scan
    children_mb: float = 0.0  # their resident memory, last scan
    children_peak: float = 0.0  # the most they held during the running task
    keys: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # recent affinity keys


class Worker:
    """A worker: one connection to the manager, ``cores`` slot processes.

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
    """

    def __init__(self, manager: str, key: bytes, *, cores: int = 1, memory_mb: int = 2000,
                 disk_mb: int = 4000, heartbeat_interval: float = 5.0,
                 manager_timeout: float = 60.0, parent_pid: int | None = None,
                 slot_keys: int = DEFAULT_SLOT_KEYS):
        if cores < 1 or memory_mb < 1:
            msg = f"a worker needs at least 1 core and 1 MB of memory (got cores={cores}, memory={memory_mb})"
            raise ConfigError(msg)
        self.manager = manager
        self.key = key
        self.cores, self.memory_mb, self.disk_mb = cores, memory_mb, disk_mb
        self.heartbeat_interval = heartbeat_interval
        self.manager_timeout = manager_timeout
        self.max_result_bytes = 0  # the manager's frame limit, from its Welcome (0: none)
        self.parent_pid = parent_pid
        self.slot_keys = slot_keys
        self.worker_id = uuid.uuid4().hex[:12]
        self._mp = multiprocessing.get_context("fork")
        self.slots: list[_Slot] = []
        self.queue: collections.deque = collections.deque()  # (item, args) from the manager
        self.functions: dict[str, bytes] = {}
        self.outbox: list[tuple[dict, bytes]] = []
        self._running_sent: list = []
        self._discard: set = set()  # cancelled tasks already written to a slot: their results are dropped
        self.stopping: str | None = None
        self.exit_code = EXIT_OK
        self._ewma_wall = 1.0
        self._last_heard = time.monotonic()
        self._last_sent = time.monotonic()
        self._last_tree_scan = 0.0
        self._ctx = None
        self.endpoint: Endpoint | None = None
        self._poller = zmq.Poller()

    # ------------------------------------------------------------ slots
    def _start_slot(self, index: int) -> _Slot:
        parent, child = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(target=slot_main, args=(child, index), daemon=True,
                                name=f"hep-slot-{index}")
        proc.start()
        child.close()
        slot = _Slot(index, proc, parent, SlotWriter(parent, f"hep-slot-writer-{index}"))
        self._poller.register(parent.fileno(), zmq.POLLIN)
        return slot

    def _restart_slot(self, slot: _Slot) -> _Slot:
        try:
            self._poller.unregister(slot.conn.fileno())
        except (KeyError, OSError, ValueError):
            pass
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(timeout=5)
        slot.writer.close()
        slot.conn.close()
        fresh = self._start_slot(slot.index)
        self.slots[slot.index] = fresh
        return fresh

    def _send_to_slot(self, slot: _Slot, item: dict, args: bytes) -> None:
        fn_hash = item["fn"]
        if fn_hash not in slot.functions:
            slot.writer.send(pickle.dumps(("fn", fn_hash, self.functions[fn_hash])))
            slot.functions.add(fn_hash)
        slot.writer.send(pickle.dumps(("task", item["id"], fn_hash, args)))
        if not slot.queue:
            self._head_started(slot)
        slot.queue.append((item, args))
        slot.peak_seen = 0.0

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
                for fn_hash, fn_bytes in zip(msg.functions, payloads):
                    self.functions[fn_hash] = fn_bytes
                for item, args in zip(msg.items, payloads[len(msg.functions):]):
                    self.queue.append((item, args))
            elif isinstance(msg, protocol.Cancel):
                self._cancel(set(msg.ids))
            elif isinstance(msg, protocol.Shutdown):
                self.stopping = msg.reason or "manager asked to stop"
            elif isinstance(msg, protocol.Refuse):
                self._refused(msg.reason)

    def _cancel(self, ids: set) -> None:
        """Drop cancelled tasks: a queued one is forgotten, a running one stops its slot.

        A cancelled task already written to a slot behind the running one is
        left to run and its result dropped, so the running task is not disturbed.
        """
        self.queue = collections.deque(e for e in self.queue if e[0]["id"] not in ids)
        for slot in list(self.slots):
            if slot.queue and slot.queue[0][0]["id"] in ids:
                keep = [e for e in list(slot.queue)[1:] if e[0]["id"] not in ids]
                slot.queue.clear()
                self._restart_slot(slot)
                self.queue.extendleft(reversed(keep))
            else:
                self._discard.update(item["id"] for item, _ in slot.queue if item["id"] in ids)

    def _process_slot_results(self, ready: set) -> None:
        for slot in list(self.slots):
            if slot.conn.fileno() not in ready:
                continue
            while True:
                try:
                    if not slot.conn.poll():
                        break
                    report = pickle.loads(slot.conn.recv_bytes())
                except (EOFError, OSError):
                    self._slot_died(slot)
                    break
                (task_id, status, payload, compressed, wall, cpu, peak, error, tb,
                 started, pid, index) = report
                item, _ = slot.queue.popleft()
                peak += slot.children_peak  # what the task's own child processes held
                self._head_started(slot)
                self._ewma_wall = 0.8 * self._ewma_wall + 0.2 * wall
                if task_id in self._discard:
                    self._discard.discard(task_id)
                    continue
                if self.max_result_bytes and len(payload) > self.max_result_bytes:
                    status, error, tb, payload = "error", self._oversize(len(payload)), "", b""
                self.outbox.append(({"id": task_id, "status": status, "wall": wall, "cpu": cpu,
                                     "peak_mb": peak, "compressed": compressed, "error": error,
                                     "traceback": tb, "started": started,
                                     "slot": f"{self.worker_id}/{index}",
                                     "host": socket.gethostname()}, payload))

    def _oversize(self, size: int) -> str:
        limit = self.max_result_bytes / 2**20
        return (f"the task's result is {size / 2**20:.0f} MB serialized, over the manager's limit of "
                f"{limit:.0f} MB per message: raise Manager(max_message_mb=...) or return less")

    def _slot_died(self, slot: _Slot, status: str = "lost", note: str = "", wall: float = 0.0) -> None:
        """The slot's process ended under its running task: report it, requeue the rest."""
        slot.proc.join(timeout=5)  # the exit code is None until the process is reaped
        if slot.queue:
            item, _ = slot.queue.popleft()
            reason = note or (f"the task's process ended {describe_exit(slot.proc.exitcode)} "
                              "(crashed, called os._exit, or was killed)")
            self.outbox.append(({"id": item["id"], "status": status, "wall": wall, "cpu": 0.0,
                                 "peak_mb": slot.peak_seen, "compressed": False,
                                 "error": reason, "traceback": "", "started": 0.0,
                                 "slot": f"{self.worker_id}/{slot.index}",
                                 "host": socket.gethostname()}, b""))
        rest = [e for e in slot.queue if e[0]["id"] not in self._discard]
        self._discard.difference_update(e[0]["id"] for e in slot.queue)
        slot.queue.clear()
        self.queue.extendleft(reversed(rest))
        self._restart_slot(slot)

    @staticmethod
    def _head_started(slot: _Slot) -> None:
        slot.head_since = time.monotonic()
        slot.children, slot.children_mb, slot.children_peak = [], 0.0, 0.0

    def _scan_trees(self) -> None:
        """Once a second, the processes each running task started, and their memory."""
        now = time.monotonic()
        busy = [s for s in self.slots if s.queue]
        if not busy or now - self._last_tree_scan < _TREE_SCAN_S:
            return
        self._last_tree_scan = now
        found = monitor.descendants([s.proc.pid for s in busy])
        for slot in busy:
            slot.children = found.get(slot.proc.pid, [])
            slot.children_mb = sum(monitor.rss_mb(pid) for pid in slot.children)
            slot.children_peak = max(slot.children_peak, slot.children_mb)

    def _kill_slot(self, slot: _Slot) -> None:
        """Kill a slot and the processes its task started (they would outlive it)."""
        for pid in [*slot.children, *monitor.descendants([slot.proc.pid])[slot.proc.pid]]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        slot.proc.kill()
        slot.proc.join(timeout=5)

    def _enforce_memory(self) -> None:
        self._scan_trees()
        for slot in list(self.slots):
            if not slot.queue:
                continue
            item = slot.queue[0][0]
            rss = monitor.rss_mb(slot.proc.pid) + slot.children_mb
            slot.peak_seen = max(slot.peak_seen, rss)
            limit = item.get("memory_mb") or 0
            if limit and rss > limit:
                log.warning("task %s used %.0f MB, over its %d MB allocation: stopping it",
                            item["id"], rss, limit)
                self._kill_slot(slot)
                self._slot_died(slot, status="exhausted",
                                note=f"task used {rss:.0f} MB, over its {limit} MB allocation")

    def _enforce_wall(self) -> None:
        now = time.monotonic()
        for slot in list(self.slots):
            limit = slot.queue[0][0].get("max_wall_s") if slot.queue else 0
            if limit and now - slot.head_since > limit:
                ran = now - slot.head_since
                log.warning("task %s ran %.1f s, over its max_wall_s of %g s: stopping it",
                            slot.queue[0][0]["id"], ran, limit)
                self._kill_slot(slot)
                self._slot_died(slot, status="timeout", note=f"task ran {ran:.1f} s, over its max_wall_s",
                                wall=ran)

    def _feed_slots(self) -> None:
        depth = 2 if self._ewma_wall < 0.02 else 1
        for slot in self.slots:
            while self.queue and len(slot.queue) < depth:
                item, args = self._next_for(slot)
                self._send_to_slot(slot, item, args)

    def _next_for(self, slot: _Slot) -> tuple[dict, bytes]:
        """The first queued task whose affinity key ``slot`` holds (a few looked at), else the next in line."""
        ahead = itertools.islice(self.queue, _SLOT_LOOKAHEAD) if slot.keys else ()
        i = next((i for i, (item, _) in enumerate(ahead) if item.get("affinity") in slot.keys), 0)
        entry = self.queue[i]
        del self.queue[i]
        key = entry[0].get("affinity")
        if key is not None:
            remember_key(slot.keys, key, self.slot_keys)
        return entry

    def _flush_results(self) -> None:
        """Send finished tasks, and which tasks run now when that changed (the manager blames only those)."""
        running = sorted(s.queue[0][0]["id"] for s in self.slots if s.queue)
        changed = running != self._running_sent
        if self.outbox or changed:
            items = [i for i, _ in self.outbox]
            self.endpoint.send(protocol.Results(items, running if changed else None),
                               [p for _, p in self.outbox])
            self.outbox = []
            self._running_sent = running
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
        busy = any(s.queue and (s.queue[0][0].get("memory_mb") or s.queue[0][0].get("max_wall_s"))
                   for s in self.slots)
        events = dict(self._poller.poll(int(1000 * (min(timeout, 0.05) if busy else timeout))))
        self._process_manager_messages()
        self._process_slot_results({fd for fd in events if isinstance(fd, int)})
        self._enforce_memory()
        self._enforce_wall()
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
                self.max_result_bytes = msg.max_message_mb * 2**20
                self._last_heard = time.monotonic()
                return True
        if self.stopping:
            log.info("worker %s stopped before it registered (%s)", self.worker_id, self.stopping)
            return False
        log.error("no answer from manager %s within %.0f s (is the address right, and the key the same?)",
                  self.manager, self.manager_timeout)
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
        sock = connect_dealer(self._ctx, self.manager, self.worker_id.encode())
        self.endpoint = Endpoint(sock, self.key, routed=False, identity=self.worker_id.encode())
        self._poller.register(sock, zmq.POLLIN)
        try:
            if self._register():
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
                    parent_pid=args.parent_pid, slot_keys=args.slot_keys)
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
