"""How Python objects become bytes and back: one place for the whole engine.

Arguments, results and exceptions are pickled with the standard pickle
when it can (fast, and classes travel by reference), with cloudpickle
when it cannot (lambdas, closures, classes defined in ``__main__``);
results past :data:`COMPRESS_ABOVE` bytes are lz4-framed. Functions are
always cloudpickled, so a function defined interactively travels too.
"""

from __future__ import annotations

import pickle

import cloudpickle
import lz4.frame

__all__ = ["COMPRESS_ABOVE", "apply_to_payloads", "dumps", "dumps_function", "loads", "pickle_bytes"]

#: results larger than this many bytes are lz4-compressed
COMPRESS_ABOVE = 16_384

_FALLBACK_ERRORS = (pickle.PicklingError, TypeError, AttributeError)


def pickle_bytes(obj) -> bytes:
    """Pickle ``obj`` with pickle, or cloudpickle where pickle cannot."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except _FALLBACK_ERRORS:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dumps_function(fn) -> bytes:
    """Serialize a task function (always cloudpickle)."""
    return cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)


def dumps(obj) -> tuple[bytes, bool]:
    """Serialize ``obj``: :func:`pickle_bytes`, lz4 past :data:`COMPRESS_ABOVE`.

    Returns ``(data, compressed)``.
    """
    data = pickle_bytes(obj)
    if len(data) > COMPRESS_ABOVE:
        return lz4.frame.compress(data), True
    return data, False


def loads(data: bytes, compressed: bool):
    """Inverse of :func:`dumps`."""
    if compressed:
        data = lz4.frame.decompress(data)
    return pickle.loads(data)


def apply_to_payloads(fn, payloads: list[tuple[bytes, bool]]):
    """Call ``fn`` on the objects that ``(data, compressed)`` payloads hold (runs on a worker)."""
    return fn([loads(data, compressed) for data, compressed in payloads])
