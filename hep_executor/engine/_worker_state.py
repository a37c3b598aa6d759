"""What a worker knows and decides, without a socket or a process.

:class:`WorkerState` takes what happens to a worker as plain calls (tasks
and cancels from the manager, results and deaths of slots, memory
samples, the clock) and answers with what to do: :class:`Write` messages
to a slot, :class:`Stop` a slot whose task is over a limit, restart a
slot, send a batch of results. The worker process
(:mod:`hep_executor.engine.worker`) only moves bytes and processes, so
every rule here (which slot gets which task, who is blamed for a death,
what a cancel stops) is unit-tested without either.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field

__all__ = ["SlotState", "Stop", "WorkerState", "Write", "remember_key"]

SLOT_LOOKAHEAD = 16  # queued tasks looked at for one whose key a free slot holds
PREFETCH_BELOW_S = 0.02  # tasks shorter than this on average: a slot gets the next one queued behind
#: the manager is told the slots' warm memory again when its sum moved by this much
WARM_REPORT_MB = 16.0


def remember_key(keys: collections.OrderedDict, key: str, limit: int) -> None:
    """Mark ``key`` as the most recent of ``keys``, forgetting the oldest past ``limit``."""
    keys[key] = True
    keys.move_to_end(key)
    while len(keys) > limit:
        keys.popitem(last=False)


@dataclass
class SlotState:
    """One slot as the worker sees it: the tasks written to it (the head runs), what it holds."""

    index: int
    queue: collections.deque = field(default_factory=collections.deque)  # (item, args)
    functions: set = field(default_factory=set)  # function hashes the slot has been sent
    keys: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # recent affinity keys
    head_since: float = 0.0  # when the task at the head started
    peak_seen: float = 0.0  # the most memory sampled under the running task
    children: list = field(default_factory=list)  # pids the running task started, last scan
    children_mb: float = 0.0
    children_peak: float = 0.0
    stopped_since: float = 0.0  # when the slot's process was first seen stopped under this task (0: not)
    warm_mb: float | None = None  # what the slot holds from task to task (None: not told yet)

    def head(self) -> dict | None:
        """The running task's item, or None when the slot is idle."""
        return self.queue[0][0] if self.queue else None

    def start_head(self, now: float) -> None:
        self.head_since = now
        self.peak_seen = 0.0
        self.children, self.children_mb, self.children_peak = [], 0.0, 0.0
        self.stopped_since = 0.0


@dataclass(frozen=True)
class Write:
    """Write ``messages`` (pickled tuples: ``("fn", ...)``, ``("task", ...)``) to slot ``index``."""

    index: int
    messages: list


@dataclass(frozen=True)
class Stop:
    """Kill slot ``index`` (and what its task started): its task is over a limit, or stopped."""

    index: int
    status: str  # "exhausted", "timeout" or "lost" (the slot's process stopped too long)
    note: str
    wall: float


class WorkerState:
    """Queue, slots and outbox of one worker, and the rules that move tasks between them.

    Parameters
    ----------
    worker_id, host : str
        Named in every result (``slot`` is ``worker_id/index``).
    cores : int
        Slots.
    slot_keys : int
        Affinity keys remembered per slot.
    """

    def __init__(self, worker_id: str, host: str, cores: int, slot_keys: int = 4):
        self.worker_id, self.host = worker_id, host
        self.slot_keys = slot_keys
        self.slots = [SlotState(i) for i in range(cores)]
        self.queue: collections.deque = collections.deque()  # (item, args) not yet written to a slot
        self.functions: dict[str, bytes] = {}
        self.outbox: list[tuple[dict, bytes]] = []
        self.discard: set = set()  # cancelled tasks written behind a running one: results dropped
        self.max_result_bytes = 0  # the manager's frame limit (0: none)
        self.lifetime_peaks = False  # slots' peaks are their lifetime peaks (the kernel's mark cannot be reset)
        self.ewma_wall = 1.0
        self.stopped_slot_s = 60.0  # a slot stopped this long under a task is killed and its task reported lost
        self.memory_mb = 0  # the worker's memory: warm slots and tasks together stay under it (0: no cap)
        self._running_sent: list = []
        self._warm_sent = 0.0

    # ------------------------------------------------------------ from the manager
    def tasks_arrived(self, functions: dict, entries) -> None:
        """The manager sent tasks (``(item, args)`` pairs) and the functions they need."""
        self.functions.update(functions)
        self.queue.extend(entries)

    def cancel(self, ids: set) -> list[int]:
        """Drop cancelled tasks; return the slots to restart (their running task was cancelled).

        A queued task is forgotten. A cancelled task written to a slot
        behind the running one runs and its result is dropped, so the
        running task is not disturbed; the tasks behind a cancelled
        running one go back to the queue.
        """
        self.queue = collections.deque(e for e in self.queue if e[0]["id"] not in ids)
        restart = []
        for slot in self.slots:
            head = slot.head()
            if head is not None and head["id"] in ids:
                keep = [e for e in list(slot.queue)[1:] if e[0]["id"] not in ids]
                self._fresh(slot.index)
                self.queue.extendleft(reversed(keep))
                restart.append(slot.index)
            else:
                self.discard.update(item["id"] for item, _ in slot.queue if item["id"] in ids)
        return restart

    # ------------------------------------------------------------ from the slots
    def slot_result(self, index: int, report: tuple, now: float) -> None:
        """Slot ``index`` finished its running task with ``report`` (the slot's tuple)."""
        (task_id, status, payload, compressed, wall, cpu, peak, error, tb,
         started, _pid, _index, warm) = report
        slot = self.slots[index]
        slot.queue.popleft()
        slot.warm_mb = warm
        peak = max(0.0, peak - warm) + slot.children_peak  # the task's own, and its child processes'
        slot.start_head(now)
        self.ewma_wall = 0.8 * self.ewma_wall + 0.2 * wall
        if task_id in self.discard:
            self.discard.discard(task_id)
            return
        if self.max_result_bytes and len(payload) > self.max_result_bytes:
            status, error, tb, payload = "error", self._oversize(len(payload)), "", b""
        self.outbox.append((self._item(task_id, index, status, wall, cpu, peak, compressed, error, tb,
                                       started, warm), payload))

    def slot_died(self, index: int, status: str = "lost", note: str = "", wall: float = 0.0) -> None:
        """Slot ``index`` ended: its running task is reported (``note`` says why), the rest requeued.

        Only the running task is blamed: tasks written behind it go back to
        the queue, and the slot starts afresh (no functions, no keys).
        """
        slot = self.slots[index]
        if slot.queue:
            item, _ = slot.queue.popleft()
            self.outbox.append((self._item(item["id"], index, status, wall, 0.0, slot.peak_seen, False,
                                           note, "", 0.0, slot.warm_mb or 0.0), b""))
        rest = [e for e in slot.queue if e[0]["id"] not in self.discard]
        self.discard.difference_update(e[0]["id"] for e in slot.queue)
        self._fresh(index)
        self.queue.extendleft(reversed(rest))

    def slot_seen(self, index: int, stopped: bool, now: float) -> None:
        """Slot ``index``'s process was seen stopped (or running) at ``now``."""
        slot = self.slots[index]
        if not stopped:
            slot.stopped_since = 0.0
        elif not slot.stopped_since:
            slot.stopped_since = now

    def slot_warm(self, index: int, mb: float) -> None:
        """Slot ``index`` holds ``mb`` from task to task (its resident memory before its task runs)."""
        self.slots[index].warm_mb = mb

    def warm_total(self) -> float:
        """What the slots hold from task to task, together (MB; slots not heard from yet count 0)."""
        return sum(s.warm_mb or 0.0 for s in self.slots)

    def warm_to_report(self) -> float | None:
        """The slots' warm memory, when it moved by :data:`WARM_REPORT_MB` since the manager was told."""
        total = self.warm_total()
        if abs(total - self._warm_sent) < WARM_REPORT_MB:
            return None
        self._warm_sent = total
        return total

    def children_seen(self, index: int, pids: list, mb: float) -> None:
        """The processes slot ``index``'s running task has started, and their memory."""
        slot = self.slots[index]
        slot.children, slot.children_mb = list(pids), mb
        slot.children_peak = max(slot.children_peak, mb)

    # ------------------------------------------------------------ decisions
    def feed(self, now: float) -> list[Write]:
        """Hand queued tasks to slots: idle ones, and one more behind a running task when tasks are short."""
        depth = 2 if self.ewma_wall < PREFETCH_BELOW_S else 1
        writes = []
        for slot in self.slots:
            messages = []
            while self.queue and len(slot.queue) < depth:
                item, args = self._next_for(slot)
                messages.extend(self._assign(slot, item, args, now))
            if messages:
                writes.append(Write(slot.index, messages))
        return writes

    def over_limits(self, now: float, rss: dict[int, float]) -> list[Stop]:
        """Running tasks over their memory (``rss`` of each busy slot, MB) or wall-time limit.

        A task's memory is its slot's resident memory less the slot's warm
        memory (what it holds from task to task), plus its child
        processes'. Its limit is its allocation, and never more than the
        worker's memory less every slot's warm memory. Until a slot has
        said its warm memory (it does before its task runs) its task's
        memory is not judged.
        """
        stops = []
        room = self.memory_mb - self.warm_total() if self.memory_mb else 0.0
        for slot in self.slots:
            item = slot.head()
            if item is None:
                continue
            ran = now - slot.head_since
            memory, wall = item.get("memory_mb") or 0, item.get("max_wall_s") or 0
            used = self._task_memory(slot, rss.get(slot.index, 0.0))
            limit = min(memory, room) if memory and room > 0 else memory
            if limit and used is not None and used > limit:
                stops.append(Stop(slot.index, "exhausted", f"task used {used:.0f} MB, over its {limit:.0f} MB "
                                  f"{'allocation' if limit == memory else 'of room left by the warm slots'}", 0.0))
            elif wall and ran > wall:
                stops.append(Stop(slot.index, "timeout", f"task ran {ran:.1f} s, over its max_wall_s", ran))
            elif slot.stopped_since and now - slot.stopped_since > self.stopped_slot_s:
                stops.append(Stop(slot.index, "lost", f"the task's process was stopped (SIGSTOP or a terminal "
                                  f"read) for {now - slot.stopped_since:.0f} s", ran))
        return stops

    @staticmethod
    def _task_memory(slot: SlotState, rss: float) -> float | None:
        """The running task's own memory in ``slot`` (its slot's ``rss`` less the warm memory), or None."""
        if slot.warm_mb is None:
            return None
        used = max(0.0, rss - slot.warm_mb) + slot.children_mb
        slot.peak_seen = max(slot.peak_seen, used)
        return used

    def flush(self) -> tuple[list, list, list | None] | None:
        """Results to send, with the running tasks when they changed (the manager blames only those)."""
        running = sorted(s.queue[0][0]["id"] for s in self.slots if s.queue)
        changed = running != self._running_sent
        if not self.outbox and not changed:
            return None
        items, payloads = [i for i, _ in self.outbox], [p for _, p in self.outbox]
        self.outbox = []
        self._running_sent = running
        return items, payloads, running if changed else None

    def busy(self) -> list[int]:
        """Slots with a running task."""
        return [s.index for s in self.slots if s.queue]

    def watching(self) -> bool:
        """Whether a running task has a memory or wall-time limit to watch closely."""
        return any((h := s.head()) is not None and (h.get("memory_mb") or h.get("max_wall_s"))
                   for s in self.slots)

    # ------------------------------------------------------------ helpers
    def _next_for(self, slot: SlotState) -> tuple[dict, bytes]:
        """The first queued task whose affinity key ``slot`` holds (a few looked at), else the next in line."""
        ahead = itertools.islice(self.queue, SLOT_LOOKAHEAD) if slot.keys else ()
        i = next((i for i, (item, _) in enumerate(ahead) if item.get("affinity") in slot.keys), 0)
        entry = self.queue[i]
        del self.queue[i]
        key = entry[0].get("affinity")
        if key is not None:
            remember_key(slot.keys, key, self.slot_keys)
        return entry

    def _assign(self, slot: SlotState, item: dict, args: bytes, now: float) -> list:
        fn_hash = item["fn"]
        messages = []
        if fn_hash not in slot.functions:
            messages.append(("fn", fn_hash, self.functions[fn_hash]))
            slot.functions.add(fn_hash)
        messages.append(("task", item["id"], fn_hash, args))
        if not slot.queue:
            slot.start_head(now)
        slot.queue.append((item, args))
        return messages

    def _fresh(self, index: int) -> None:
        self.slots[index] = SlotState(index)

    def _item(self, task_id, index, status, wall, cpu, peak, compressed, error, tb, started, warm) -> dict:
        item = {"id": task_id, "status": status, "wall": wall, "cpu": cpu, "peak_mb": peak,
                "compressed": compressed, "error": error, "traceback": tb, "started": started,
                "slot": f"{self.worker_id}/{index}", "host": self.host, "warm_mb": warm}
        if self.lifetime_peaks:
            item["lifetime_peak"] = True
        return item

    def _oversize(self, size: int) -> str:
        limit = self.max_result_bytes / 2**20
        return (f"the task's result is {size / 2**20:.0f} MB serialized, over the manager's limit of "
                f"{limit:.0f} MB per message: raise Manager(max_message_mb=...) or return less")
