"""Analysis: one run of a processor over a fileset.

fileset -> file metadata (preprocessing tasks) -> chunk plan -> chunk
tasks -> reduction on the workers -> output with its coverage. Holds the
run (:func:`hep_executor.analysis._runner.run`), the feed-and-merge
pipeline, the chunk sources, the chunk and merge tasks that workers run,
the slots' warm caches, ROOT I/O (local files, ``root://``), and the run's
counts (:class:`RunStatus`) with the live dashboard that serves them.

May import: engine, planning, errors, coffea, uproot, awkward. Never
imports cli, batch or the coffea executor faces; knows nothing of the
workers' sockets (the dashboard's read-only HTTP server is its one listener).
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "CheckpointStore": ("hep_executor.analysis._checkpoint", "CheckpointStore"),
    "RunCheckpoint": ("hep_executor.analysis._checkpoint_run", "RunCheckpoint"),
    "CheckedOutput": ("hep_executor.analysis._chunk_errors", "CheckedOutput"),
    "ChunkSpec": ("hep_executor.analysis._chunk_tasks", "ChunkSpec"),
    "PRELOAD": ("hep_executor.analysis._chunk_tasks", "PRELOAD"),
    "WORKER_SETUP": ("hep_executor.analysis._chunk_tasks", "WORKER_SETUP"),
    "process_chunk": ("hep_executor.analysis._chunk_tasks", "process_chunk"),
    "RunnerMetadata": ("hep_executor.analysis._coffea_work", "RunnerMetadata"),
    "RunnerWork": ("hep_executor.analysis._coffea_work", "RunnerWork"),
    "fetch_metadata": ("hep_executor.analysis._coffea_work", "fetch_metadata"),
    "processor_of": ("hep_executor.analysis._coffea_work", "processor_of"),
    "recognise": ("hep_executor.analysis._coffea_work", "recognise"),
    "tolerance": ("hep_executor.analysis._coffea_work", "tolerance"),
    "work_chunk": ("hep_executor.analysis._coffea_work", "work_chunk"),
    "Dashboard": ("hep_executor.analysis._dashboard", "Dashboard"),
    "dashboard_port": ("hep_executor.analysis._dashboard", "dashboard_port"),
    "end_state": ("hep_executor.analysis._dashboard", "end_state"),
    "serving": ("hep_executor.analysis._dashboard", "serving"),
    "load_fileset": ("hep_executor.analysis._fileset", "load_fileset"),
    "normalize_fileset": ("hep_executor.analysis._fileset", "normalize_fileset"),
    "resolve_paths": ("hep_executor.analysis._fileset", "resolve_paths"),
    "FileCache": ("hep_executor.analysis._io", "FileCache"),
    "FileInfo": ("hep_executor.analysis._io", "FileInfo"),
    "file_info": ("hep_executor.analysis._io", "file_info"),
    "is_remote": ("hep_executor.analysis._io", "is_remote"),
    "open_file": ("hep_executor.analysis._io", "open_file"),
    "open_tree": ("hep_executor.analysis._io", "open_tree"),
    "CachedMetadata": ("hep_executor.analysis._metadata_cache", "CachedMetadata"),
    "MetadataCache": ("hep_executor.analysis._metadata_cache", "MetadataCache"),
    "open_cache": ("hep_executor.analysis._metadata_cache", "open_cache"),
    "cached_filemeta": ("hep_executor.analysis._metadata_cache_coffea", "cached_filemeta"),
    "store_filemeta": ("hep_executor.analysis._metadata_cache_coffea", "store_filemeta"),
    "FAIL_FAST_AFTER": ("hep_executor.analysis._pipeline", "FAIL_FAST_AFTER"),
    "FailFast": ("hep_executor.analysis._pipeline", "FailFast"),
    "ReducePipeline": ("hep_executor.analysis._pipeline", "ReducePipeline"),
    "gather": ("hep_executor.analysis._preprocess", "gather"),
    "RunStatus": ("hep_executor.analysis._run_status", "RunStatus"),
    "run": ("hep_executor.analysis._runner", "run"),
    "ChunkSource": ("hep_executor.analysis._sources", "ChunkSource"),
    "DEFAULT_INITIAL_CHUNK": ("hep_executor.analysis._sources", "DEFAULT_INITIAL_CHUNK"),
    "PROBE_FLOOR": ("hep_executor.analysis._sources", "PROBE_FLOOR"),
    "Segment": ("hep_executor.analysis._sources", "Segment"),
    "build_source": ("hep_executor.analysis._sources", "build_source"),
    "make_allocator": ("hep_executor.analysis._sources", "make_allocator"),
    "segments_of_workitems": ("hep_executor.analysis._sources", "segments_of_workitems"),
    "TASKS_KEPT": ("hep_executor.analysis._task_rows", "TASKS_KEPT"),
    "TaskRows": ("hep_executor.analysis._task_rows", "TaskRows"),
    "read_rows": ("hep_executor.analysis._task_rows", "read_rows"),
    "prepare_task_function": ("hep_executor.analysis._usercode", "prepare_task_function"),
    "warm": ("hep_executor.analysis._warm", None),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
