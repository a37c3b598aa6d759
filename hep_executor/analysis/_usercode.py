"""The user's code on remote workers: which modules travel by value, which files travel along.

Both faces call :func:`prepare_task_function` on the function they run
on chunks: the module defining the processor (and the task function) is
pickled by value when it is no installed distribution, so a worker that
cannot import it runs it anyway, and the files named by ``files=`` /
``extra_input_files`` ride inside the function (once per worker). For
coffea's Runner, whose function holds the processor as lz4-compressed
cloudpickle bytes made before the executor is called, the processor is
taken out and put back as the instance, so it is pickled with the
function, after its module is registered, and unpickled once per slot.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import cloudpickle
import lz4.frame

from hep_executor.engine import ShippedFiles, register_by_value, with_files
from hep_executor.engine import dumps_function

__all__ = ["Shipment", "prepare_task_function"]

log = logging.getLogger(__name__)


@dataclass
class Shipment:
    """What a task function carries to each worker, for the run report."""

    modules_by_value: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    file_bytes: int = 0
    function_bytes: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def prepare_task_function(fn: Callable, processor: Any = None, files=None) -> tuple[Callable, Shipment]:
    """``fn`` ready for workers that lack the caller's code; and what it carries.

    Parameters
    ----------
    fn : callable
        The task function (a :func:`functools.partial` of coffea's or ours).
    processor : object, optional
        The processor instance, if the caller has it; else looked for in
        ``fn`` (coffea's compressed form included).
    files : list of str, optional
        Files or folders to ship with ``fn``.
    """
    shipment = Shipment()
    fn = _processor_by_value(fn, processor, shipment)
    shipment.modules_by_value += [m for m in register_by_value(fn) if m not in shipment.modules_by_value]
    shipped = ShippedFiles(files) if files else None
    if shipped is not None:
        shipment.files, shipment.file_bytes = shipped.names, shipped.nbytes
    fn = with_files(fn, shipped)
    shipment.function_bytes = len(dumps_function(fn))
    if shipment.modules_by_value or shipment.files:
        log.info("task function carries modules %s and files %s (%d bytes per worker)",
                 shipment.modules_by_value, shipment.files, shipment.function_bytes)
    return fn, shipment


def _processor_by_value(fn: Callable, processor: Any, shipment: Shipment) -> Callable:
    """Register the processor's module; put coffea's compressed processor back as the instance."""
    if processor is not None:
        shipment.modules_by_value += register_by_value(processor)
        return fn
    inner = _find_keyword_holder(fn, "processor_instance")
    if inner is None:
        return fn
    held = inner.keywords["processor_instance"]
    instance = cloudpickle.loads(lz4.frame.decompress(held)) if isinstance(held, bytes) else held
    shipment.modules_by_value += register_by_value(instance)
    if not isinstance(held, bytes):
        return fn
    # the instance itself, not bytes unpickled in every task: it travels once per worker
    # inside the function, and a module missing there fails loading the function, by name
    return _replace_partial(fn, inner, functools.partial(inner.func, *inner.args,
                                                         **{**inner.keywords, "processor_instance": instance}))


def _find_keyword_holder(fn, keyword: str):
    """The partial in ``fn``'s nest of partials (args and keywords) that binds ``keyword``."""
    if not isinstance(fn, functools.partial):
        return None
    if keyword in fn.keywords:
        return fn
    for value in (*fn.args, *fn.keywords.values()):
        found = _find_keyword_holder(value, keyword)
        if found is not None:
            return found
    return None


def _replace_partial(fn, old, new):
    if fn is old:
        return new
    if not isinstance(fn, functools.partial):
        return fn
    args = tuple(_replace_partial(a, old, new) for a in fn.args)
    keywords = {k: _replace_partial(v, old, new) for k, v in fn.keywords.items()}
    return functools.partial(fn.func, *args, **keywords)
