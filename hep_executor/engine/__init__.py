"""The engine: runs serialized Python calls on worker processes over ZeroMQ.

Holds the :class:`~hep_executor.engine._manager.Manager` (submit / wait /
hungry / empty / cancel / workers / status / close) and the
:class:`~hep_executor.engine._dask_manager.DaskManager` with the same face
over a dask.distributed cluster, the Manager's task and worker
tables, the signed wire protocol, the transport, serialization, the run's
key, the worker process with its slots and resource monitor (its rules in
a network-free :class:`WorkerState`), and local
worker processes.

May import: the standard library, pyzmq, cloudpickle, lz4, psutil, dask
(the _dask_*.py modules only) and
:mod:`hep_executor.errors`. Never imports analysis, planning, batch, cli,
coffea, uproot or awkward: a worker that runs plain Python calls does not
pay for them. What it needs from above (modules to preload, how many
affinity keys a slot keeps, another launcher for workers) is passed in.
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "slot_main": ("hep_executor.engine._slot", "slot_main"),
    "curve_keys": ("hep_executor.engine._transport", "curve_keys"),
    "Stop": ("hep_executor.engine._worker_state", "Stop"),
    "WorkerState": ("hep_executor.engine._worker_state", "WorkerState"),
    "Write": ("hep_executor.engine._worker_state", "Write"),
    "AffinityHints": ("hep_executor.engine._dask_affinity", "AffinityHints"),
    "connect_dask": ("hep_executor.engine._dask_connect", "connect_dask"),
    "connect_gateway": ("hep_executor.engine._dask_gateway", "connect_gateway"),
    "DaskManager": ("hep_executor.engine._dask_manager", "DaskManager"),
    "RemotePayload": ("hep_executor.engine._dask_results", "RemotePayload"),
    "FreeIndex": ("hep_executor.engine._dispatch", "FreeIndex"),
    "OWN_FRAME_BYTES": ("hep_executor.engine._frames", "OWN_FRAME_BYTES"),
    "pack_payloads": ("hep_executor.engine._frames", "pack_payloads"),
    "unpack_payloads": ("hep_executor.engine._frames", "unpack_payloads"),
    "SANDBOX_ENV": ("hep_executor.engine._files", "SANDBOX_ENV"),
    "ShippedFiles": ("hep_executor.engine._files", "ShippedFiles"),
    "register_by_value": ("hep_executor.engine._files", "register_by_value"),
    "with_files": ("hep_executor.engine._files", "with_files"),
    "keys": ("hep_executor.engine._keys", None),
    "load_key": ("hep_executor.engine._keys", "load_key"),
    "read_password_file": ("hep_executor.engine._keys", "read_password_file"),
    "write_key_file": ("hep_executor.engine._keys", "write_key_file"),
    "FunctionStore": ("hep_executor.engine._ledger", "FunctionStore"),
    "LocalProcesses": ("hep_executor.engine._local", "LocalProcesses"),
    "Manager": ("hep_executor.engine._manager", "Manager"),
    "protocol": ("hep_executor.engine._protocol", None),
    "TaskReport": ("hep_executor.engine._results", "TaskReport"),
    "TaskResult": ("hep_executor.engine._results", "TaskResult"),
    "dumps": ("hep_executor.engine._serialization", "dumps"),
    "dumps_function": ("hep_executor.engine._serialization", "dumps_function"),
    "loads": ("hep_executor.engine._serialization", "loads"),
    "pickle_bytes": ("hep_executor.engine._serialization", "pickle_bytes"),
    "WorkerSpec": ("hep_executor.engine._spec", "WorkerSpec"),
    "TaskState": ("hep_executor.engine._state", "TaskState"),
    "TaskTable": ("hep_executor.engine._state", "TaskTable"),
    "WorkerRecord": ("hep_executor.engine._state", "WorkerRecord"),
    "query_status": ("hep_executor.engine._status_client", "query_status"),
    "Endpoint": ("hep_executor.engine._transport", "Endpoint"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
