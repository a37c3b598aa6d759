"""Planning: pure decisions about the work, no I/O.

Chunking (entry ranges, coverage), chunk sizing from task reports,
memory allocation per category, and the shape of the reduction tree.
Everything here is a function or a small class fed with numbers and
reports, unit-tested without files or sockets.

May import: the standard library, numpy and :mod:`hep_executor.errors`.
Never imports engine, analysis, batch, cli, or any I/O library
(uproot, zmq, sqlite3).
"""
