"""The engine: runs serialized Python calls on worker processes over ZeroMQ.

Holds the :class:`~hep_executor.engine.manager.Manager` (submit / wait /
hungry / empty / cancel / workers / status / close) and the
:class:`~hep_executor.engine.dask_manager.DaskManager` with the same face
over a dask.distributed cluster, the Manager's task and worker
tables, the signed wire protocol, the transport, serialization, the run's
key, the worker process with its slots and resource monitor, and local
worker processes.

May import: the standard library, pyzmq, cloudpickle, lz4, psutil, dask
(dask_manager.py only) and
:mod:`hep_executor.errors`. Never imports analysis, planning, batch, cli,
coffea, uproot or awkward: a worker that runs plain Python calls does not
pay for them. What it needs from above (modules to preload, how many
affinity keys a slot keeps, another launcher for workers) is passed in.
"""
