"""Processors that fail in one chunk in the ways a chunk can fail: a crash, a signal, an unpicklable output."""

from __future__ import annotations

import os
import signal
import threading

from tests.analysis.simple_processor import MuonPtProcessor


class _OneChunk(MuonPtProcessor):
    """MuonPtProcessor, except on the chunk of a file named ``*marker*`` that holds entry ``entry``."""

    def __init__(self, marker: str, entry: int = 1500):
        self.marker, self.entry = marker, entry

    def hit(self, events) -> bool:
        meta = events.metadata
        return self.marker in os.path.basename(meta["filename"]) and meta["entrystart"] <= self.entry < meta["entrystop"]


class ExitProcessor(_OneChunk):
    """Calls ``os._exit(3)`` in one chunk."""

    def process(self, events):
        if self.hit(events):
            os._exit(3)
        return super().process(events)


class SegfaultProcessor(_OneChunk):
    """Sends itself SIGSEGV in one chunk."""

    def process(self, events):
        if self.hit(events):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().process(events)


class UnpicklableProcessor(_OneChunk):
    """Returns a lock deep inside its output in one chunk."""

    def process(self, events):
        out = super().process(events)
        if self.hit(events):
            out["nested"] = {"handle": [1, threading.Lock()]}
        return out
