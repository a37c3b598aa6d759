"""A slow processor for the Ctrl-C tests that notes when each chunk starts (to see dispatch stop)."""

from __future__ import annotations

import os
import time

from tests.analysis.simple_processor import SlowProcessor


class StartNotingProcessor(SlowProcessor):
    """:class:`SlowProcessor` that appends ``time file start stop`` to ``log`` as each chunk starts."""

    def __init__(self, delay: float = 1.0, log: str = ""):
        super().__init__(delay)
        self.log = log

    def process(self, events):
        meta = events.metadata
        line = f"{time.time():.6f} {meta['filename']} {meta['entrystart']} {meta['entrystop']}\n"
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write with O_APPEND: lines of two workers never interleave
        finally:
            os.close(fd)
        return super().process(events)
