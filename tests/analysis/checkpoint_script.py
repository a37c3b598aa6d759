"""A run with a checkpoint folder, as its own process, for the tests that kill or interrupt it.

``python -m tests.analysis.checkpoint_script FILESET_JSON FOLDER LOG OUT [options]`` runs
:class:`~tests.analysis.simple_processor.SlowProcessor` over the fileset with
``run(..., checkpoint=FOLDER)``; each chunk that comes back is one JSON line in
LOG (file, start, stop); the output, coverage and report go to OUT (a pickle)
when the run completes. Exit code 3: the run was interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys

from hep_executor import run
from hep_executor.errors import RunInterrupted
from tests.analysis.simple_processor import SlowProcessor


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("fileset")
    p.add_argument("folder")
    p.add_argument("log")
    p.add_argument("out")
    p.add_argument("--chunksize", type=int, default=500)
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--every-chunks", type=int, default=2)
    p.add_argument("--grace", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--delay-factor", type=float, default=1.0, help="another processor state")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with open(args.fileset) as fh:
        fileset = json.load(fh)
    with open(args.log, "a") as log:
        def progress(stage, result=None, item=None):
            if stage == "process" and result.ok:
                log.write(json.dumps([item.filename, item.entrystart, item.entrystop]) + "\n")
                log.flush()

        try:
            result = run(fileset, SlowProcessor(args.delay * args.delay_factor), workers=args.workers,
                         chunksize=args.chunksize, checkpoint=args.folder,
                         checkpoint_every_chunks=args.every_chunks, interrupt_grace_s=args.grace,
                         progress=progress)
        except RunInterrupted as exc:
            print(f"interrupted: {exc}", file=sys.stderr)
            return 3
    with open(args.out, "wb") as fh:
        pickle.dump({"output": result.output, "coverage_ok": result.coverage.ok, "report": result.report}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
