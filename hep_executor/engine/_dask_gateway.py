"""Dask clusters of a dask-gateway (analysis facilities): :func:`connect_gateway`.

::

    manager = connect_gateway("gateway://gateway.example.org:8000", cluster="NAME")  # --dask gateway://...
    manager = connect_gateway("https://gateway.example.org", workers=4, auth="jupyterhub")  # a new cluster
    try:
        result = run(fileset, processor, manager=manager)
    finally:
        manager.close()      # closes the client; shuts down the cluster only if it was started here

``gateway://HOST:PORT`` names a gateway served over http on that port
(its API and its scheduler proxy, as the gateway's proxy serves both);
``http(s)://`` URLs are passed to ``dask_gateway.Gateway`` as they are.
The client talks to the cluster's scheduler with the cluster's own TLS
security objects (``GatewayCluster.get_client``). Authentication is
dask-gateway's: ``auth`` is ``"basic"``, ``"kerberos"``, ``"jupyterhub"``
or an auth object, and its keywords come from dask's configuration
(``gateway.auth.kwargs``, e.g. ``DASK_GATEWAY__AUTH__KWARGS__PASSWORD``).
The gateway is probed first with one bounded TCP connection, so an
address where nothing listens fails within ``timeout`` with
:class:`~hep_executor.errors.SchedulerUnreachableError` naming it.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlparse

from hep_executor.engine._dask_manager import DaskManager
from hep_executor.errors import ConfigError, SchedulerUnreachableError

__all__ = ["connect_gateway", "gateway_url", "is_gateway"]

log = logging.getLogger(__name__)

_SCHEMES = ("gateway", "http", "https")


def is_gateway(address) -> bool:
    """Whether a ``workers.dask`` value names a dask-gateway (``gateway://``, or a dict with ``gateway``)."""
    if isinstance(address, dict):
        return "gateway" in address
    return isinstance(address, str) and address.startswith("gateway://")


def gateway_url(address: str) -> str:
    """The gateway's http(s) URL for ``address`` (``gateway://HOST:PORT`` is ``http://HOST:PORT``)."""
    parsed = urlparse(address)
    if parsed.scheme not in _SCHEMES or not parsed.hostname:
        msg = f"a dask-gateway address is gateway://HOST:PORT or an http(s):// URL, not {address!r}"
        raise ConfigError(msg)
    if parsed.scheme == "gateway":
        if parsed.port is None:
            msg = f"the dask-gateway address {address!r} needs a port (gateway://HOST:PORT)"
            raise ConfigError(msg)
        return f"http://{parsed.netloc}"
    return address.rstrip("/")


def connect_gateway(address: str, *, cluster: str | None = None, workers: int = 1, auth=None,
                    proxy: str | None = None, timeout: float = 10.0, **options) -> DaskManager:
    """A :class:`DaskManager` over a cluster of the dask-gateway at ``address``.

    Parameters
    ----------
    address : str
        ``gateway://HOST:PORT``, or the gateway's ``http(s)://`` URL.
    cluster : str, optional
        Name of a running cluster of the gateway to use (it is left running). None: start a new
        cluster of ``workers`` workers, shut down by the manager's ``close()``.
    workers : int
        Workers of a new cluster.
    auth : str or dask_gateway.auth.GatewayAuth, optional
        dask-gateway's authentication (None: its configuration's ``gateway.auth.type``).
    proxy : str, optional
        The gateway's scheduler proxy, when it is not at ``address``'s host and port.
    timeout : float
        Seconds to wait for the gateway to answer, and for a new cluster's first worker.
    **options
        Passed on to :class:`DaskManager` (``memory_resource``, ``affinity``, ``worker_keys``).

    Returns
    -------
    DaskManager
        It owns the client and the cluster object.

    Raises
    ------
    SchedulerUnreachableError
        Nothing answered at the gateway's address within ``timeout`` s.
    ConfigError
        ``address`` is not a gateway address, or the gateway has no cluster named ``cluster``.
    """
    url = gateway_url(address)
    _probe(url, timeout)
    found = _cluster({"address": url, "proxy_address": proxy, "auth": auth}, cluster, workers)
    try:
        client = found.get_client(set_as_default=False)
        if cluster is None:
            client.wait_for_workers(1, timeout=max(timeout, 60.0))
        manager = DaskManager(client, close_client=True, cluster=found, **options)
    except BaseException:
        found.close()
        raise
    log.info("connected to dask-gateway %s, cluster %s (%d workers)", url, found.name, len(manager.workers()))
    return manager


def _cluster(where: dict, name: str | None, workers: int):
    """The cluster ``name`` of the gateway ``where`` (``GatewayCluster`` keywords), or a new one of ``workers``."""
    from dask_gateway import Gateway, GatewayCluster

    if name is None:
        found = GatewayCluster(**where, shutdown_on_close=True)
        found.scale(int(workers))
        return found
    try:
        return GatewayCluster.from_name(name, **where, shutdown_on_close=False)
    except ValueError as exc:  # the gateway's 404
        with Gateway(**where) as gateway:
            running = [c.name for c in gateway.list_clusters()]
        msg = f"dask-gateway {where['address']} has no cluster {name!r} (running: {', '.join(running) or 'none'})"
        raise ConfigError(msg) from exc


def _probe(url: str, timeout: float) -> None:
    parsed = urlparse(url)
    port = parsed.port or {"http": 80, "https": 443}[parsed.scheme]
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as exc:
        msg = (f"no dask-gateway answered at {url!r} within {timeout:g} s ({exc}); check the address "
               "(workers.dask in the config, or --dask) and that the gateway is running")
        raise SchedulerUnreachableError(msg) from exc
