"""The worker's side of a slot's pipe: a writer thread, so that a send never blocks the worker.

A slot writes its result back while the worker may be writing the next
task to it; over a pipe whose buffers are smaller than either message,
two blocking writes wait for each other for ever. :class:`SlotWriter`
moves every write to the slot onto a thread of its own, so the worker's
loop keeps reading results (and heartbeating) whatever the slot is doing.
"""

from __future__ import annotations

import logging
import queue
import threading

__all__ = ["SlotWriter"]

log = logging.getLogger(__name__)


class SlotWriter:
    """Writes messages to one slot's connection, in order, from a thread.

    Parameters
    ----------
    conn : multiprocessing.connection.Connection
        The worker's end of the slot's pipe.
    name : str
        Thread name (for debugging).
    """

    def __init__(self, conn, name: str):
        self._conn = conn
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.broken = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the slot; returns at once."""
        self._queue.put(data)

    def close(self, timeout: float = 2.0) -> None:
        """Stop after what is queued (or at once if the slot is gone); wait up to ``timeout``."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self.broken:
                continue  # the slot is gone: drop the rest until close()
            try:
                self._conn.send_bytes(data)
            except (OSError, ValueError) as exc:  # the slot died or the pipe was closed
                log.debug("slot pipe closed while writing: %s", exc)
                self.broken = True
