"""A real XRootD server on 127.0.0.1 for tests (Debian ``xrootd-server``).

The server exports one folder (``data_dir``) at ``root://127.0.0.1:PORT//``.
As root it runs as the ``xrootd`` user (``-R xrootd``: the server refuses
to run as root) with its folders owned by that user; as another user it
runs as that user.

Command line::

    python -m tests.servers.xrootd start DIR    # serve a copy of DIR's files until Ctrl-C
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from tests.servers import (
    Service,
    ServiceError,
    ServiceUnavailable,
    free_port,
    is_root,
    missing_programs,
    program,
    stop_process,
    wait_until,
)

__all__ = ["XRootDServer", "available"]

SERVICE_USER = "xrootd"
# Short client timeouts for the readiness probe (xrdfs would otherwise retry for minutes).
_PROBE_ENV = {
    "XRD_CONNECTIONWINDOW": "1",
    "XRD_CONNECTIONRETRY": "1",
    "XRD_REQUESTTIMEOUT": "3",
    "XRD_TIMEOUTRESOLUTION": "1",
}


def available() -> str | None:
    """None when an XRootD server can run here, else the reason it cannot."""
    missing = missing_programs("xrootd", "xrdfs")
    if missing:
        return f"{' and '.join(missing)} not installed (Debian packages xrootd-server, xrootd-client)"
    if is_root():
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root but there is no {SERVICE_USER!r} user to run xrootd as"
    return None


class XRootDServer(Service):
    """One ``xrootd`` process serving ``data_dir`` on a free port of 127.0.0.1.

    Parameters
    ----------
    workdir : str or Path, optional
        Folder for the config, logs and served data (default: a new
        temporary folder, removed by :meth:`cleanup`).
    port : int, optional
        Port to listen on (default: a free one, chosen at start).

    Examples
    --------
    >>> with XRootDServer() as server:  # doctest: +SKIP
    ...     url = server.add_file("events.root")
    """

    host = "127.0.0.1"

    def __init__(self, workdir: str | os.PathLike | None = None, port: int | None = None):
        reason = available()
        if reason:
            raise ServiceUnavailable(reason)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hepx-xrootd-"))
        self.workdir.chmod(0o755)  # the xrootd user must reach data_dir
        self.data_dir = self.workdir / "data"
        for sub in ("data", "admin", "run"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.port = port or free_port(self.host)
        self.log_path = self.workdir / "xrootd.log"
        self.process: subprocess.Popen | None = None
        self._fixed_port = port is not None
        self._chown(self.workdir)

    # ------------------------------------------------------------ addresses
    @property
    def url_prefix(self) -> str:
        """``root://127.0.0.1:PORT/``; append ``/name`` for a file in ``data_dir``."""
        return f"root://{self.host}:{self.port}/"

    def url(self, name: str) -> str:
        """URL of ``name`` (relative to ``data_dir``)."""
        return f"{self.url_prefix}/{name.lstrip('/')}"

    def add_file(self, src: str | os.PathLike, name: str | None = None) -> str:
        """Copy ``src`` into ``data_dir`` (as ``name``); return its URL."""
        dest = self.data_dir / (name or Path(src).name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        self._chown(dest.parent)
        return self.url(str(dest.relative_to(self.data_dir)))

    # ------------------------------------------------------------ life cycle
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0, attempts: int = 4) -> XRootDServer:
        """Start the server and wait until it answers ``xrdfs ls /``.

        A clash on a chosen free port is retried on another one (up to
        ``attempts`` times) unless the port was fixed or the server ran before.
        """
        if self.running:
            return self
        for attempt in range(attempts):
            if attempt and not self._fixed_port:
                self.port = free_port(self.host)
            self._launch()
            if self._wait_ready(timeout):
                return self
            log_tail = self.log_tail()
            stop_process(self.process)
            if "address already in use" not in log_tail.lower() or self._fixed_port:
                break
        msg = f"xrootd did not start on {self.host}:{self.port} within {timeout:g} s:\n{self.log_tail()}"
        raise ServiceError(msg)

    def stop(self) -> None:
        """Stop the server process (it can be started again on the same port)."""
        stop_process(self.process)
        self.process = None
        self._fixed_port = True  # a restart must come back where clients expect it

    def restart(self, timeout: float = 10.0) -> XRootDServer:
        """Stop, then start again on the same port."""
        self.stop()
        return self.start(timeout=timeout, attempts=1)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------ internals
    def _launch(self) -> None:
        config = self.workdir / "xrootd.cfg"
        config.write_text(
            "all.export /\n"
            f"oss.localroot {self.data_dir}\n"
            f"xrd.port {self.port}\n"
            f"all.adminpath {self.workdir / 'admin'}\n"
            f"all.pidpath {self.workdir / 'run'}\n"
        )
        cmd = [program("xrootd"), "-c", str(config)]
        if is_root():
            cmd[1:1] = ["-R", SERVICE_USER]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.workdir,
                                            start_new_session=True)
        weakref.finalize(self, stop_process, self.process)  # gone at exit even without stop()

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout

        def listening() -> bool:
            if not self.running:
                return True  # stop waiting: it died
            with socket.socket() as sock:
                sock.settimeout(0.5)
                return sock.connect_ex((self.host, self.port)) == 0

        wait_until(listening, timeout)
        env = {**os.environ, **_PROBE_ENV}
        while self.running and time.monotonic() < deadline:
            try:
                probe = subprocess.run([program("xrdfs"), f"{self.host}:{self.port}", "ls", "/"],
                                       env=env, capture_output=True, timeout=5)
            except subprocess.TimeoutExpired:
                continue
            if probe.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def _chown(self, path: Path) -> None:
        if not is_root():
            return
        user = pwd.getpwnam(SERVICE_USER)
        for root, dirs, files in os.walk(path):
            os.chown(root, user.pw_uid, user.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.servers.xrootd start DIR``: serve a copy of DIR until interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "start":
        print("usage: python -m tests.servers.xrootd start DIR", file=sys.stderr)
        return 2
    server = XRootDServer()
    try:
        for path in sorted(Path(argv[1]).iterdir()):
            if path.is_file():
                server.add_file(path)
        server.start()
        print(f"serving {argv[1]} at {server.url_prefix} (work folder {server.workdir}); Ctrl-C stops")
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
