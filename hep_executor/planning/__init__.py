"""Planning: pure decisions about the work, no I/O.

Chunking (entry ranges, coverage), chunk sizing from task reports,
memory allocation per category, and the shape of the reduction tree.
Everything here is a function or a small class fed with numbers and
reports, unit-tested without files or sockets.

May import: the standard library, numpy and :mod:`hep_executor.errors`.
Never imports engine, analysis, batch, cli, or any I/O library
(uproot, zmq, sqlite3).
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "Allocator": ("hep_executor.planning._allocation", "Allocator"),
    "MIN_MEMORY_MB": ("hep_executor.planning._allocation", "MIN_MEMORY_MB"),
    "Resources": ("hep_executor.planning._allocation", "Resources"),
    "exhaustive_buckets": ("hep_executor.planning._allocation", "exhaustive_buckets"),
    "greedy_buckets": ("hep_executor.planning._allocation", "greedy_buckets"),
    "ladder_cost": ("hep_executor.planning._allocation", "ladder_cost"),
    "Coverage": ("hep_executor.planning._chunking", "Coverage"),
    "CoverageReport": ("hep_executor.planning._chunking", "CoverageReport"),
    "FileCursor": ("hep_executor.planning._chunking", "FileCursor"),
    "plan_ranges": ("hep_executor.planning._chunking", "plan_ranges"),
    "split_range": ("hep_executor.planning._chunking", "split_range"),
    "subtract_ranges": ("hep_executor.planning._chunking", "subtract_ranges"),
    "TreeReducer": ("hep_executor.planning._reduction", "TreeReducer"),
    "ChunkSizer": ("hep_executor.planning._sizing", "ChunkSizer"),
    "SizingTargets": ("hep_executor.planning._sizing", "SizingTargets"),
    "theil_sen": ("hep_executor.planning._sizing", "theil_sen"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
