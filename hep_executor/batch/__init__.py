"""Batch: start and stop worker jobs on this machine, Slurm or HTCondor, and the factory.

Each batch system is a :class:`~hep_executor.batch._base.BatchSystem`;
:func:`get_batch_system` picks one by name. The factory keeps a number of
worker jobs alive while a manager has work.

May import: engine (the worker command line, the key, the status client)
and errors. Never imports analysis, planning or cli.
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "BatchSystem": ("hep_executor.batch._base", "BatchSystem"),
    "WorkerSpec": ("hep_executor.batch._base", "WorkerSpec"),
    "get_batch_system": ("hep_executor.batch._base", "get_batch_system"),
    "CondorBatch": ("hep_executor.batch._condor", "CondorBatch"),
    "condor_arguments": ("hep_executor.batch._condor", "condor_arguments"),
    "parse_terse": ("hep_executor.batch._condor", "parse_terse"),
    "LAUNCHER": ("hep_executor.batch._env", "LAUNCHER"),
    "add_pack_arguments": ("hep_executor.batch._env", "add_pack_arguments"),
    "archive_digest": ("hep_executor.batch._env", "archive_digest"),
    "check_archive": ("hep_executor.batch._env", "check_archive"),
    "find_x509_proxy": ("hep_executor.batch._env", "find_x509_proxy"),
    "pack": ("hep_executor.batch._env", "pack"),
    "pack_main": ("hep_executor.batch._env", "pack_main"),
    "unpack": ("hep_executor.batch._env", "unpack"),
    "write_runner": ("hep_executor.batch._env", "write_runner"),
    "FactoryPolicy": ("hep_executor.batch._factory", "FactoryPolicy"),
    "MAX_BATCH_ERRORS": ("hep_executor.batch._factory", "MAX_BATCH_ERRORS"),
    "add_factory_arguments": ("hep_executor.batch._factory", "add_factory_arguments"),
    "add_submit_arguments": ("hep_executor.batch._factory", "add_submit_arguments"),
    "factory_main": ("hep_executor.batch._factory", "factory_main"),
    "normalize_address": ("hep_executor.batch._factory", "normalize_address"),
    "run_factory": ("hep_executor.batch._factory", "run_factory"),
    "submit_main": ("hep_executor.batch._factory", "submit_main"),
    "WorkerJobs": ("hep_executor.batch._jobs", "WorkerJobs"),
    "LocalBatch": ("hep_executor.batch._local", "LocalBatch"),
    "SlurmBatch": ("hep_executor.batch._slurm", "SlurmBatch"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
