"""Remote files planned from the metadata cache, until a chunk confirms or refutes their UUID.

A ``root://`` file cannot be stat'ed cheaply, so its cached row (entries, UUID,
clusters) is a guess: :func:`hep_executor.run` (streaming or preprocess-first)
plans the file from it, and every chunk
compares the UUID it opens with the one planned
(:class:`~hep_executor.errors.InputChangedError` otherwise). :class:`RemoteGuesses`
keeps the guessed plans: a chunk that succeeds confirms its file; the first
one that finds another UUID drops the row from the cache, has the file read
again (the old plan is dropped, never trusted), and every chunk of the old
plan that fails the same way is passed over.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["RemoteGuesses"]

log = logging.getLogger(__name__)


class RemoteGuesses:
    """Plans of remote files taken from the cache, by ``(file, UUID)``; see the module docstring.

    Parameters
    ----------
    cache : MetadataCache
    reread : callable
        ``reread(index)`` queues the metadata read of the fileset's entry ``index`` again.
    """

    def __init__(self, cache, reread: Callable[[int], None]):
        self.cache = cache
        self.reread = reread
        self._guessed: dict[tuple[str, Any], tuple[int, str]] = {}  # (file, UUID) -> (entry index, tree)
        self._replaced: set[tuple[str, Any]] = set()

    def __len__(self) -> int:
        return len(self._guessed)

    @property
    def replaced(self) -> int:
        """Files found changed and read again."""
        return len(self._replaced)

    def expect(self, index: int, filename: str, treename: str, uuid: Any) -> None:
        """Entry ``index`` is planned from the cached UUID ``uuid``."""
        self._guessed[(filename, uuid)] = (index, treename)

    def confirm(self, item) -> None:
        """A chunk of ``item``'s file read the planned UUID: later changes are real errors."""
        self._guessed.pop((item.filename, item.fileuuid), None)

    def changed(self, item) -> bool:
        """``item`` found its file changed: whether its plan was a guess (now being replaced)."""
        key = (item.filename, item.fileuuid)
        if key in self._replaced:
            return True
        guess = self._guessed.pop(key, None)
        if guess is None:
            return False
        index, treename = guess
        self._replaced.add(key)
        log.warning("%s: its UUID is not the one in metadata cache %s; reading its metadata again",
                    item.filename, self.cache.path)
        self.cache.forget([(item.filename, treename)])
        self.reread(index)
        return True

    def passed_over(self, item) -> bool:
        """Whether ``item`` belongs to a replaced plan (its failure does not count)."""
        return (item.filename, item.fileuuid) in self._replaced
