"""The exception hierarchy of hep_executor.

Every error a user can cause names the file, dataset, URL, worker or
setting at fault and, where it helps, what to do about it::

    HepExecutorError
    ├── ConfigError (ValueError)            bad config key or value
    │   ├── CheckpointMismatchError         a checkpoint of another run (names what differs)
    │   └── FilesetError                    a fileset's structure is wrong (names dataset and key)
    │       └── DuplicateFileError          a file listed twice, in one dataset or in two
    ├── InputError (OSError)                a ROOT input that cannot be used
    │   ├── FileMissingError                no such file or URL
    │   ├── NotRootFileError                not a ROOT file
    │   ├── TruncatedFileError              ROOT file cut short or corrupt
    │   ├── TreeNotFoundError               the tree is not in the file
    │   ├── EmptyInputError                 a tree with no entries, a dataset with no files
    │   ├── RemoteAccessError               XRootD server down, timeouts
    │   ├── ChunkReadError (also ChunkError)    damage found while reading a chunk
    │   │   └── ChunkRemoteAccessError (also RemoteAccessError)   the server failed mid-chunk
    │   └── InputChangedError (also ChunkError) the file differs from the plan (UUID, entries)
    ├── ProtocolError                       malformed or incompatible message
    │   ├── AuthenticationError             a message failed the signature check
    │   │   ├── ReplayError                 a message seen before, or out of order
    │   │   └── SessionMismatchError        a message signed for another run
    │   └── VersionMismatchError            worker of another protocol version
    ├── TaskError                           a task did not produce a result
    │   ├── RemoteTaskError                 the task raised (carries the traceback text)
    │   ├── ChunkError                      a chunk failed (names dataset, file, range, attempts, cause)
    │   │   ├── ChunkLostError (also WorkerLostError)   the chunk's process died (signal, exit code)
    │   │   ├── ChunkExhaustedError (also ResourceExhaustedError)   over its memory allocation
    │   │   ├── ChunkCodeUnavailableError (also CodeUnavailableError)   the worker lacks a module
    │   │   └── UnpicklableResultError      the processor's output cannot be pickled
    │   ├── WorkerLostError                 the task killed its worker too often
    │   ├── ResourceExhaustedError (MemoryError)   over its memory allocation
    │   ├── TaskTimeoutError (TimeoutError)   ran longer than its max_wall_s and was stopped
    │   └── CodeUnavailableError (ImportError)   the worker cannot import the task's code
    ├── CoverageError                       output misses or doubles entry ranges
    ├── BatchError (RuntimeError)           a batch system refused or failed a job
    ├── ManagerClosedError (RuntimeError)   the manager was used after close()
    ├── NoWorkersError (RuntimeError)       no worker left, and none will be started
    └── SchedulerUnreachableError (ConnectionError)   no Dask scheduler answered at the address

    RunInterrupted (KeyboardInterrupt)      Ctrl-C stopped a checkpointed run (says how to resume)
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BatchError",
    "CheckpointMismatchError",
    "ChunkCodeUnavailableError",
    "ChunkError",
    "ChunkExhaustedError",
    "ChunkLostError",
    "ChunkReadError",
    "ChunkRemoteAccessError",
    "CodeUnavailableError",
    "ConfigError",
    "CoverageError",
    "DuplicateFileError",
    "EmptyInputError",
    "FileMissingError",
    "FilesetError",
    "HepExecutorError",
    "InputChangedError",
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
    "SchedulerUnreachableError",
    "SessionMismatchError",
    "TaskError",
    "TreeNotFoundError",
    "TruncatedFileError",
    "UnpicklableResultError",
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
    """A chunk failed; the message names dataset, file, entry range, attempts and cause.

    Parameters
    ----------
    message : str
        What failed, naming dataset, file and entry range.
    filename : str
    entrystart, entrystop : int
    dataset : str
    attempts : int
        Times the chunk ran (0: not known where the error was raised).
    """

    def __init__(self, message: str, filename: str = "", entrystart: int = 0, entrystop: int = 0, *,
                 dataset: str = "", attempts: int = 0):
        super().__init__(message)
        self.filename, self.entrystart, self.entrystop = filename, entrystart, entrystop
        self.dataset, self.attempts = dataset, attempts
        self.path = filename

    def __str__(self) -> str:
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.filename,
                             self.entrystart, self.entrystop), dict(self.__dict__))


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


class TaskTimeoutError(TaskError, TimeoutError):
    """A task ran longer than its ``max_wall_s`` and was stopped.

    Parameters
    ----------
    message : str
        Names the task, its category, the worker's host and the limit.
    wall_s : float
        How long it had run when it was stopped.
    limit_s : float
        Its ``max_wall_s``.
    """

    def __init__(self, message: str, wall_s: float = 0.0, limit_s: float = 0.0):
        super().__init__(message)
        self.wall_s = wall_s
        self.limit_s = limit_s

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.wall_s, self.limit_s))


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


class FilesetError(ConfigError):
    """A fileset's structure is wrong; the one-line message names the dataset and key at fault."""


class DuplicateFileError(FilesetError):
    """A file is listed twice, in one dataset or in two.

    Parameters
    ----------
    message : str
    path : str
        The file listed twice.
    """

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.path))


class ChunkReadError(ChunkError, InputError):
    """Damage found while reading a chunk: corrupt baskets, decompression errors, a file gone."""


class ChunkRemoteAccessError(ChunkReadError, RemoteAccessError):
    """A remote (XRootD) read failed while a chunk was read, after its retries."""


class InputChangedError(ChunkError, InputError):
    """A file differs from what preprocessing planned (UUID, entries): it changed under the run."""


class ChunkLostError(ChunkError, WorkerLostError):
    """A chunk ended its process (a signal, ``os._exit``, killed) too many times."""


class ChunkCodeUnavailableError(ChunkError, CodeUnavailableError):
    """A chunk's task could not be loaded on its worker: a module of the user's code is missing there."""

    module: str = ""


class ChunkExhaustedError(ChunkError, ResourceExhaustedError):
    """A chunk went over its memory allocation, at the largest allocation or as one entry."""

    peak_mb: float = 0.0
    limit_mb: float = 0.0


class UnpicklableResultError(ChunkError):
    """The processor's output for a chunk cannot be pickled; the message names the type and where."""


class SchedulerUnreachableError(HepExecutorError, ConnectionError):
    """No Dask scheduler answered at the given address within the connect timeout (names the address)."""
