"""The demo's sample files: a seeded generator of small NanoAOD-like ROOT files.

Not a runtime layer: only the command line (``hep-executor
make-samples``), the tests and the benchmarks import it.
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "make_samples": ("hep_executor.demo._samples", "make_samples"),
    "samples": ("hep_executor.demo._samples", None),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
