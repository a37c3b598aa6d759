"""The exception hierarchy of hep_executor.

Every error a user can cause names the file, dataset, URL, worker or
setting at fault and, where it helps, what to do about it::

    HepExecutorError
    ├── ConfigError (ValueError)            bad config key or value
    │   └── CheckpointMismatchError         a checkpoint of another run (names what differs)
    ├── InputError (OSError)                a ROOT input that cannot be used
    │   ├── FileMissingError                no such file or URL
    │   ├── NotRootFileError                not a ROOT file
    │   ├── TruncatedFileError              ROOT file cut short or corrupt
    │   ├── TreeNotFoundError               the tree is not in the file
    │   ├── EmptyInputError                 a tree with no entries, a dataset with no files
    │   └── RemoteAccessError               XRootD server down, timeouts
    ├── ProtocolError                       malformed or incompatible message
    │   ├── AuthenticationError             a message failed the signature check
    │   │   ├── ReplayError                 a message seen before, or out of order
    │   │   └── SessionMismatchError        a message signed for another run
    │   └── VersionMismatchError            worker of another protocol version
    ├── TaskError                           a task did not produce a result
    │   ├── RemoteTaskError                 the task raised (carries the traceback text)
    │   ├── ChunkError                      the processor raised on a chunk (names file and range)
    │   ├── WorkerLostError                 the task killed its worker too often
    │   ├── ResourceExhaustedError (MemoryError)   over its memory allocation
    │   └── CodeUnavailableError (ImportError)   the worker cannot import the task's code
    ├── CoverageError                       output misses or doubles entry ranges
    ├── BatchError (RuntimeError)           a batch system refused or failed a job
    ├── ManagerClosedError (RuntimeError)   the manager was used after close()
    └── NoWorkersError (RuntimeError)       no worker left, and none will be started

    RunInterrupted (KeyboardInterrupt)      Ctrl-C stopped a checkpointed run (says how to resume)
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BatchError",
    "CheckpointMismatchError",
    "ChunkError",
    "CodeUnavailableError",
    "ConfigError",
    "CoverageError",
    "EmptyInputError",
    "FileMissingError",
    "HepExecutorError",
    "InputError",
    "ManagerClosedError",
    "NoWorkersError",
    "NotRootFileError",
    "ProtocolError",
    "RemoteAccessError",
    "RemoteTaskError",
    "ReplayError",
    "RunInterrupted",
    "ResourceExhaustedError",
    "SessionMismatchError",
    "TaskError",
    "TreeNotFoundError",
    "TruncatedFileError",
    "VersionMismatchError",
    "WorkerLostError",
]


class HepExecutorError(Exception):
    """Base class of every error raised by hep_executor."""


class ConfigError(HepExecutorError, ValueError):
    """A configuration key or value is wrong; the message names the key."""


class InputError(HepExecutorError, OSError):
    """A ROOT input (file, URL, tree or dataset) cannot be used.

    Parameters
    ----------
    message : str
        What went wrong, naming the input.
    path : str, optional
        The file or URL at fault.
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (str(self), self.path))


class FileMissingError(InputError, FileNotFoundError):
    """The file or URL does not exist."""


class NotRootFileError(InputError):
    """The file exists but is not a ROOT file."""


class TruncatedFileError(InputError):
    """The ROOT file is cut short or its contents cannot be decoded."""


class TreeNotFoundError(InputError, KeyError):
    """The requested tree is not in the file."""

    __str__ = InputError.__str__


class EmptyInputError(InputError):
    """A file whose tree has no entries, or a dataset with no files."""


class RemoteAccessError(InputError, ConnectionError):
    """A remote (XRootD) server could not be reached or timed out."""


class ProtocolError(HepExecutorError):
    """A message between manager and worker is malformed or incompatible."""


class AuthenticationError(ProtocolError):
    """A message failed the signature check (wrong or missing key)."""


class VersionMismatchError(ProtocolError):
    """A worker speaks another protocol version than the manager."""


class TaskError(HepExecutorError):
    """A task did not produce a result."""


class RemoteTaskError(TaskError):
    """A task raised on its worker.

    Parameters
    ----------
    message : str
        ``ExceptionType: message`` of the original exception.
    traceback_text : str
        The formatted traceback from the worker.
    """

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        base = self.args[0] if self.args else ""
        if self.traceback_text:
            return f"{base}\n\nTraceback on the worker:\n{self.traceback_text}"
        return base

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.traceback_text))


class ChunkError(TaskError):
    """The processor raised on a chunk; the message names the file and entry range.

    Parameters
    ----------
    message : str
        What failed, naming dataset, file and entry range.
    filename : str
    entrystart, entrystop : int
    """

    def __init__(self, message: str, filename: str = "", entrystart: int = 0, entrystop: int = 0):
        super().__init__(message)
        self.filename, self.entrystart, self.entrystop = filename, entrystart, entrystop

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.filename,
                             self.entrystart, self.entrystop))


class WorkerLostError(TaskError):
    """A task's worker died under it too many times."""


class ResourceExhaustedError(TaskError, MemoryError):
    """A task went over its memory allocation and was stopped.

    Parameters
    ----------
    message : str
        Human-readable description.
    peak_mb : float
        Peak memory seen before the task was stopped.
    limit_mb : float
        The allocation it exceeded.
    """

    def __init__(self, message: str, peak_mb: float = 0.0, limit_mb: float = 0.0):
        super().__init__(message)
        self.peak_mb = peak_mb
        self.limit_mb = limit_mb

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.peak_mb, self.limit_mb))


class CoverageError(HepExecutorError):
    """The output does not cover the planned entry ranges exactly once."""


class BatchError(HepExecutorError, RuntimeError):
    """A batch system refused, failed or lost a worker job."""


class ManagerClosedError(HepExecutorError, RuntimeError):
    """The manager was used after it was closed."""


class ReplayError(AuthenticationError):
    """A correctly signed message whose sequence number was seen before (replayed or reordered)."""


class SessionMismatchError(AuthenticationError):
    """A correctly signed message of another run (another session of the same key file).

    Parameters
    ----------
    message : str
        What was refused.
    session : bytes
        The session the message was signed for.
    """

    def __init__(self, message: str, session: bytes = b""):
        super().__init__(message)
        self.session = session


class NoWorkersError(HepExecutorError, RuntimeError):
    """Tasks wait, no worker is connected, and the manager will start no more (its restart cap)."""


class CodeUnavailableError(TaskError, ImportError):
    """A task's function or arguments could not be unpickled on its worker: a module is missing there.

    Parameters
    ----------
    message : str
        What could not be loaded, naming the module and what to do.
    module : str
        The module the worker could not import.
    """

    def __init__(self, message: str, module: str = ""):
        super().__init__(message)
        self.module = module

    def __str__(self) -> str:
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.module))


class CheckpointMismatchError(ConfigError):
    """A checkpoint folder holds another run (other files or processor); the message says what differs."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a checkpointed run after writing its checkpoint.

    Not a :class:`HepExecutorError`: like any ``KeyboardInterrupt`` it is not
    caught by ``except Exception``.

    Attributes
    ----------
    checkpoint : str
        The checkpoint folder; the same call with it resumes the run.
    partial_output : object or None
        The merged output of what was done (when it was merged to one).
    """

    def __init__(self, message: str, checkpoint: str = "", partial_output=None):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.partial_output = partial_output
