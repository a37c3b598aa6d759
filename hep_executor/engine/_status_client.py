"""Asking a running manager how much work it has, from another process."""

from __future__ import annotations

import uuid

import zmq

from hep_executor.engine import _protocol as protocol
from hep_executor.errors import RemoteAccessError
from hep_executor.engine._transport import Endpoint, connect_dealer

__all__ = ["query_status"]


def query_status(address: str, key: bytes, timeout: float = 5.0, curve: bool = False) -> dict:
    """Return the manager's :meth:`~hep_executor.engine._manager.Manager.status` dict.

    Raises
    ------
    RemoteAccessError
        No (valid) answer from ``address`` within ``timeout`` seconds.
    """
    ctx = zmq.Context.instance()
    identity = uuid.uuid4().hex.encode()
    sock = connect_dealer(ctx, address, identity, curve_key=key if curve else None)
    endpoint = Endpoint(sock, key, routed=False, identity=identity)
    try:
        endpoint.send(protocol.StatusQuery())
        if endpoint.poll(timeout):
            got = endpoint.recv()
            if got is not None and isinstance(got[1], protocol.StatusReply):
                return got[1].status
        msg = f"no status answer from manager {address} within {timeout:g} s (down, or another key?)"
        raise RemoteAccessError(msg, address)
    finally:
        endpoint.close()
