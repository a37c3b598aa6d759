"""Connecting to a Dask scheduler by address: :func:`connect_dask`.

::

    manager = connect_dask("tcp://scheduler.example.org:8786")   # hep-executor run --dask ADDRESS
    try:
        result = run(fileset, processor, manager=manager)
    finally:
        manager.close()          # closes the client it made; the cluster keeps running

The address is probed first with one bounded connection (and a Dask
handshake) made in a short-lived thread of its own, so an address where no
scheduler answers fails within ``timeout`` with
:class:`~hep_executor.errors.SchedulerUnreachableError` naming it, and leaves
no client, event-loop thread or connection behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import distributed
import distributed.comm

from hep_executor.engine._dask_gateway import connect_gateway, is_gateway
from hep_executor.engine._dask_manager import DaskManager
from hep_executor.errors import SchedulerUnreachableError

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "connect_dask"]

log = logging.getLogger(__name__)

#: seconds to wait for a Dask scheduler to answer
DEFAULT_CONNECT_TIMEOUT = 10.0


def connect_dask(address: str | dict, *, timeout: float = DEFAULT_CONNECT_TIMEOUT, **options) -> DaskManager:
    """A :class:`DaskManager` over a new ``distributed.Client`` of the scheduler at ``address``.

    Parameters
    ----------
    address : str or dict
        The scheduler's address, ``tcp://HOST:PORT`` (``HOST:PORT`` means tcp); or a dask-gateway's,
        ``gateway://HOST:PORT`` or ``{"gateway": URL, "cluster": NAME, "auth": ..., "workers": N}``
        (see :func:`~hep_executor.engine._dask_gateway.connect_gateway`).
    timeout : float
        Seconds to wait for the scheduler to answer.
    **options
        Passed on to :class:`DaskManager` (``memory_resource``, ``affinity``, ``worker_keys``).

    Returns
    -------
    DaskManager
        It owns the client: its ``close()`` closes the client, never the cluster.

    Raises
    ------
    SchedulerUnreachableError
        No Dask scheduler (or gateway) answered at ``address`` within ``timeout`` s.
    """
    if is_gateway(address):
        spec = dict(address) if isinstance(address, dict) else {"gateway": address}
        return connect_gateway(spec.pop("gateway"), timeout=timeout, **spec, **options)
    _probe(address, timeout)
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _unreachable(address, timeout, exc) from exc
    try:
        manager = DaskManager(client, close_client=True, **options)
    except BaseException:
        client.close()
        raise
    log.info("connected to the Dask scheduler at %s (%d workers)", address, len(manager.workers()))
    return manager


def _probe(address: str, timeout: float) -> None:
    """One Dask connection to ``address``, opened and closed in a thread of its own with its own loop."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hep-dask-probe") as pool:
        try:
            pool.submit(asyncio.run, _handshake(address, timeout)).result()
        except (OSError, TimeoutError, ValueError) as exc:
            raise _unreachable(address, timeout, exc) from exc


async def _handshake(address: str, timeout: float) -> None:
    comm = await distributed.comm.connect(address, timeout=timeout)
    await comm.close()


def _unreachable(address: str, timeout: float, cause: BaseException) -> SchedulerUnreachableError:
    msg = (f"no Dask scheduler answered at {address!r} within {timeout:g} s ({cause}); "
           "check the address (workers.dask in the config, or --dask) and that the scheduler is running")
    return SchedulerUnreachableError(msg)
