"""Source text of user modules the user-code tests write to folders no worker path holds.

``PROCESSOR`` defines ``UserPtProcessor``; at run time it imports the
helper module ``usercuts`` (``HELPER``); ``HOLDING``'s processor keeps a
``usercuts`` object, so unpickling it needs that module and reads ``scale.txt`` from the
working directory, so a worker that lacks the caller's ``sys.path`` or
working directory fails. ``SCRIPT`` runs it through :func:`hep_executor.run`
and coffea's IterativeExecutor and pickles both outputs.
"""

PROCESSOR = '''
import awkward as ak
import hist
import numpy as np
from coffea import processor


class UserPtProcessor(processor.ProcessorABC):
    def process(self, events):
        import usercuts

        with open("scale.txt") as fh:
            scale = float(fh.read())
        ds = events.metadata["dataset"]
        pt = ak.flatten(events.Muon.pt)
        pt = pt[pt > usercuts.PT_MIN] * scale
        h = hist.Hist.new.StrCat([], name="dataset", growth=True).Reg(40, 0, 200, name="pt").Weight()
        h.fill(dataset=ds, pt=pt)
        return {"pt": h, "events": {ds: len(events)},
                "sumpt": {ds: float(ak.sum(ak.values_astype(pt, np.float64)))}}

    def postprocess(self, accumulator):
        return accumulator
'''

HELPER = """
PT_MIN = 10.0


class Cuts:
    pt_min = PT_MIN
"""

#: a processor holding an object of the helper module: unpickling it needs ``usercuts``
HOLDING = '''
from coffea import processor

import usercuts


class HoldingProcessor(processor.ProcessorABC):
    def __init__(self):
        self.cuts = usercuts.Cuts()

    def process(self, events):
        return {"events": {events.metadata["dataset"]: len(events)}}

    def postprocess(self, accumulator):
        return accumulator
'''

SCRIPT = '''
import json
import pickle
import sys

sys.path.insert(0, sys.argv[1])
from userproc import UserPtProcessor

from coffea import processor
from coffea.nanoevents import NanoAODSchema

import hep_executor

fileset = json.load(open(sys.argv[2]))
ours = hep_executor.run(fileset, UserPtProcessor(), workers=2, chunksize=1000).output
runner = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                          chunksize=1000)
ref = runner(fileset, treename="Events", processor_instance=UserPtProcessor())
with open(sys.argv[3], "wb") as fh:
    pickle.dump({"ours": ours, "ref": ref}, fh)
'''
