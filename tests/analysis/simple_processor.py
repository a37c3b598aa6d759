"""A small processor for the analysis tests: muon pt per dataset, counts, a float sum."""

from __future__ import annotations

import time

import awkward as ak
import hist
import numpy as np
from coffea import processor


class MuonPtProcessor(processor.ProcessorABC):
    """Fills muon pt per dataset; counts events; sums muon pt as a float."""

    def process(self, events):
        ds = events.metadata["dataset"]
        h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(40, 0, 200, name="pt").Weight()
        pt = ak.flatten(events.Muon.pt)
        h.fill(dataset=ds, pt=pt)
        return {"pt": h, "events": {ds: len(events)}, "sumpt": {ds: float(ak.sum(ak.values_astype(pt, np.float64)))}}

    def postprocess(self, accumulator):
        return accumulator


class FailingProcessor(processor.ProcessorABC):
    """Raises on the chunk that holds entry 1500 of any file."""

    def process(self, events):
        start, stop = events.metadata["entrystart"], events.metadata["entrystop"]
        if start <= 1500 < stop:
            raise RuntimeError("bad value in this chunk")
        return {"events": {events.metadata["dataset"]: len(events)}}

    def postprocess(self, accumulator):
        return accumulator


class MemoryHungryProcessor(processor.ProcessorABC):
    """Holds ``mb_per_event`` MB per event for ``hold_s`` seconds while it works (memory grows with chunk size)."""

    def __init__(self, mb_per_event: float = 0.1, hold_s: float = 0.0):
        self.mb_per_event = mb_per_event
        self.hold_s = hold_s

    def process(self, events):
        block = np.ones(int(len(events) * self.mb_per_event * 2**20 / 8))
        time.sleep(self.hold_s)  # long enough for the worker's memory samples to see the peak
        n = len(events)
        del block
        ds = events.metadata["dataset"]
        return {"events": {ds: n}, "sumpt": {ds: float(ak.sum(ak.values_astype(events.Muon.pt, np.float64)))}}

    def postprocess(self, accumulator):
        return accumulator


class SlowProcessor(MuonPtProcessor):
    """MuonPtProcessor that takes ``delay`` seconds per chunk (to act on a run mid-way)."""

    def __init__(self, delay: float = 0.3):
        self.delay = delay

    def process(self, events):
        import time

        time.sleep(self.delay)
        return super().process(events)
