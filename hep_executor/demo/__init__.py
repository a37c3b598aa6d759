"""The demo's sample files: a seeded generator of small NanoAOD-like ROOT files.

Not a runtime layer: only the command line (``hep-executor
make-samples``), the tests and the benchmarks import it.
"""
