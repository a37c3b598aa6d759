"""Analysis: one run of a processor over a fileset.

fileset -> file metadata (preprocessing tasks) -> chunk plan -> chunk
tasks -> reduction on the workers -> output with its coverage. Holds the
run (:func:`hep_executor.analysis.runner.run`), the feed-and-merge
pipeline, the chunk sources, the chunk and merge tasks that workers run,
the slots' warm caches and ROOT I/O (local files, ``root://``).

May import: engine, planning, errors, coffea, uproot, awkward. Never
imports cli, batch or the coffea executor faces; knows nothing of sockets.
"""
