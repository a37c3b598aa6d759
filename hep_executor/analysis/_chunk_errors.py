"""What a failed chunk becomes: one :class:`~hep_executor.errors.ChunkError` subclass per cause.

- :func:`is_read_damage` tells damaged input (a corrupt basket, a
  decompression error, a deserialization error) from a processor's own bug,
  for an exception raised while a chunk's lazy columns were read;
- :class:`CheckedOutput` wraps a chunk's output so that, when it cannot be
  pickled, the error names the first unpicklable leaf (``out['lock']``,
  ``out['hist'].axes``) and its type, on the worker where the object lives;
- :func:`as_chunk_error` turns any failure of a chunk task on the manager
  (a lost worker, a memory kill, a remote exception) into the ChunkError
  subclass that names dataset, file, entry range, attempts and cause. The
  engine knows nothing of files; this is where its errors get them.
"""

from __future__ import annotations

import pickle
import re
import signal
from typing import Any

from hep_executor.engine import pickle_bytes
from hep_executor.errors import (
    ChunkCodeUnavailableError,
    ChunkError,
    ChunkExhaustedError,
    ChunkLostError,
    ChunkReadError,
    ChunkRemoteAccessError,
    CodeUnavailableError,
    InputError,
    RemoteAccessError,
    ResourceExhaustedError,
    UnpicklableResultError,
    WorkerLostError,
)

__all__ = ["CheckedOutput", "as_chunk_error", "first_unpicklable", "is_read_damage"]

#: modules whose exceptions mean the bytes of a file could not be decoded
_DAMAGE_MODULES = ("uproot", "cramjam", "zlib", "lz4", "zstandard", "lzma", "xxhash", "_lzma")
#: deepest level of an output searched for the unpicklable leaf
_MAX_DEPTH = 32


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_read_damage(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) comes from decoding a file's bytes."""
    import lzma
    import zlib

    for e in _chain(exc):
        if isinstance(e, (zlib.error, lzma.LZMAError, InputError)):
            return True
        if type(e).__module__.split(".")[0] in _DAMAGE_MODULES:
            return True
    return False


def _picklable(obj: Any) -> bool:
    try:
        pickle_bytes(obj)
    except Exception:
        return False
    return True


def _children(obj: Any, where: str):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{where}[{key!r}]", value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            yield f"{where}[{i}]", value
    else:
        attrs = getattr(obj, "__dict__", None)
        for name, value in (attrs.items() if isinstance(attrs, dict) else ()):
            yield f"{where}.{name}", value


def first_unpicklable(obj: Any, where: str = "output", depth: int = 0) -> tuple[str, Any] | None:
    """``(path, leaf)`` of the first part of ``obj`` that cannot be pickled, or None when it can.

    Walks dicts, lists, tuples, sets and attributes (``out['hist'].lock``) down to
    the deepest object that fails alone; only called once pickling has failed.
    """
    if depth > _MAX_DEPTH or _picklable(obj):
        return None
    for path, child in _children(obj, where):
        found = first_unpicklable(child, path, depth + 1)
        if found is not None:
            return found
    return where, obj


def _loads(data: bytes) -> Any:
    return pickle.loads(data)


def _same(value: Any) -> Any:
    return value


class CheckedOutput:
    """A chunk task's return value that names its unpicklable part when it cannot be pickled.

    It unpickles as ``value`` itself, so merge tasks and the manager never
    see the wrapper. The first time it is pickled it hands ``value`` to the
    pickler as it is (no cost); when that fails, the engine pickles it again
    with cloudpickle, and this second time it pickles ``value`` itself, so
    that a failure is caught here and named (path and type of the leaf).
    """

    __slots__ = ("chunk", "tries", "value")

    def __init__(self, value: Any, chunk):
        self.value, self.chunk, self.tries = value, chunk, 0

    def __reduce__(self):
        self.tries += 1
        if self.tries == 1:
            return (_same, (self.value,))
        try:
            data = pickle_bytes(self.value)
        except Exception as exc:
            raise self._error(exc) from None
        return (_loads, (data,))

    def _error(self, exc: Exception) -> UnpicklableResultError:
        chunk = self.chunk
        found = first_unpicklable(self.value.get("out") if isinstance(self.value, dict) else self.value)
        where, leaf = found if found is not None else ("output", self.value)
        kind = f"{type(leaf).__module__}.{type(leaf).__qualname__}"
        msg = (f"{chunk.describe()}: the processor's output cannot be pickled: {where} is a {kind} "
               f"({type(exc).__name__}: {exc}); return plain data (numbers, arrays, hists, dicts)")
        err = UnpicklableResultError(msg, chunk.filename, chunk.entrystart, chunk.entrystop,
                                     dataset=chunk.dataset)
        err.where, err.type_name = where, kind
        return err


def _lost_cause(text: str) -> str:
    """A lost worker's reason in words: the signal's name, or the exit code.

    Reads the engine's wording (``ended by signal SIGSEGV``, ``ended with exit
    code 3``; older workers say ``exit code -11``).
    """
    times = re.search(r"killed its worker (\d+) times", text)
    count = f" {times.group(1)} times" if times else ""
    by_signal = re.search(r"by signal (\w+)", text)
    if by_signal is not None:
        return f"the chunk's process was killed by {by_signal.group(1)}{count}"
    code = re.search(r"exit code (-?\d+)", text)
    if code is None:
        return f"the chunk ended its worker's process{count} ({text})"
    value = int(code.group(1))
    if value < 0:
        try:
            name = signal.Signals(-value).name
        except ValueError:
            name = f"signal {-value}"
        return f"the chunk's process was killed by {name}{count} (exit code {value})"
    return f"the chunk's process exited with code {value}{count} (os._exit or sys.exit in the processor?)"


def _wrapped_class(error: BaseException) -> type[ChunkError]:
    if isinstance(error, CodeUnavailableError):
        return ChunkCodeUnavailableError
    if isinstance(error, WorkerLostError):
        return ChunkLostError
    if isinstance(error, ResourceExhaustedError):
        return ChunkExhaustedError
    if isinstance(error, RemoteAccessError):
        return ChunkRemoteAccessError
    if isinstance(error, InputError):
        return ChunkReadError
    return ChunkError


def as_chunk_error(chunk, error: BaseException, attempts: int) -> ChunkError:
    """The :class:`ChunkError` subclass a user sees for ``chunk``'s failure ``error``.

    A ChunkError from the worker keeps its class and message, with ``attempts``
    added; any other error (a lost worker, a memory kill, an exception the
    chunk task did not name) becomes the matching subclass whose message names
    dataset, file, entry range, attempts and cause.
    """
    suffix = f" [{attempts} attempt{'s' if attempts != 1 else ''}]"
    if isinstance(error, ChunkError):
        if not str(error).endswith(suffix):
            error.args = (f"{error}{suffix}",)
        error.dataset, error.attempts = error.dataset or chunk.dataset, attempts
        return error
    cls = _wrapped_class(error)
    text = str(error).split("\n\n", 1)[0]
    cause = _lost_cause(text) if cls is ChunkLostError else f"{type(error).__name__}: {text}"
    wrapped = cls(f"{chunk.describe()}: {cause}{suffix}", chunk.filename, chunk.entrystart, chunk.entrystop,
                  dataset=chunk.dataset, attempts=attempts)
    if isinstance(error, ResourceExhaustedError):
        wrapped.peak_mb, wrapped.limit_mb = error.peak_mb, error.limit_mb
    if isinstance(error, CodeUnavailableError):
        wrapped.module = error.module
    wrapped.__cause__ = error
    return wrapped
