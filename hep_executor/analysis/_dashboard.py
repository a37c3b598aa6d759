"""The live dashboard of a run: a read-only HTTP server on 127.0.0.1 (port 0: any free
port) serving one static page and ``/status.json``, a :class:`RunStatus` snapshot.

Built on the standard library's ``http.server`` (a thread, no dependency): the page
polls the JSON every second, which is all a progress view needs; a bokeh server would
add a large dependency and a second event loop for the same numbers. The run's main
thread publishes snapshots (:meth:`Dashboard.publish`); the server thread only reads
the latest one, so it never touches the manager.

:func:`run(..., dashboard=...) <hep_executor.analysis._runner.run>`, ``HepExecutor(dashboard=...)``
and ``hep-executor run --dashboard`` serve it; ``hep-executor status`` reads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from hep_executor.analysis._run_status import RunStatus
from hep_executor.errors import ConfigError

__all__ = ["Dashboard", "dashboard_port", "end_state", "serving"]

log = logging.getLogger(__name__)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>hep-executor run</title>
<style>
body{font-family:sans-serif;margin:1.5em;color:#222} h1{font-size:1.4em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #bbb;padding:.25em .7em;text-align:right}
th{background:#eee} td:first-child,th:first-child{text-align:left} .bar{background:#ddd;width:30em;height:1em}
.fill{background:#1f77b4;height:1em} #state{font-weight:bold}
</style></head><body>
<h1>hep-executor run <span id="state">connecting</span></h1>
<table id="progress"><tr><th></th><th>done</th><th>total</th><th></th></tr></table>
<p id="rate"></p>
<h2>Workers</h2><table id="workers"></table>
<h2>Chunk size per dataset over time</h2><table id="sizes"></table>
<h2>Recent tasks: memory against allocation</h2><table id="memory"></table>
<p id="updated"></p>
<script>
function row(cells, head){return "<tr>"+cells.map(c=>(head?"<th>":"<td>")+c+(head?"</th>":"</td>")).join("")+"</tr>";}
function spark(h){if(!h||h.length<2)return "";const w=180,y=26,t0=h[0][0],dt=Math.max(h[h.length-1][0]-t0,1e-9),
  top=Math.max(...h.map(p=>p[1]));const pts=h.map(p=>((p[0]-t0)/dt*w).toFixed(1)+","+(y-1-p[1]/top*(y-3)).toFixed(1));
  return '<svg width="'+w+'" height="'+y+'"><polyline fill="none" stroke="#1f77b4" points="'+pts.join(" ")+'"/></svg>';}
function bar(d,t){const f=t?Math.min(100,100*d/t):0;return '<div class="bar"><div class="fill" style="width:'+f+'%"></div></div>';}
async function tick(){
  try{
    const s=await (await fetch("status.json",{cache:"no-store"})).json();
    document.getElementById("state").textContent="("+s.state+")";
    let p=row(["","done","total",""],true);
    for(const k of ["files","chunks","events"]){const v=s[k];p+=row([k,v.done.toLocaleString(),
      v.total==null?"?":(v.estimated?"~":"")+v.total.toLocaleString(),bar(v.done,v.total)]);}
    document.getElementById("progress").innerHTML=p;
    document.getElementById("rate").textContent=Math.round(s.events_per_s).toLocaleString()+" events/s, ETA "+
      (s.eta_s==null?"?":Math.round(s.eta_s)+" s")+", elapsed "+Math.round(s.elapsed_s)+" s, failures "+s.failed+
      ", retries "+s.retries;
    let w=row(["worker","host","slots busy","slots idle","cores","memory MB","tasks done"],true);
    for(const x of s.workers){w+=row([x.name,x.host,x.busy,Math.max(x.cores-x.busy,0),x.cores,x.memory_mb??"-",x.completed??"-"]);}
    document.getElementById("workers").innerHTML=w;
    let z=row(["dataset","last chunk (events)","chunks done","size over time"],true);
    for(const [d,v] of Object.entries(s.chunk_sizes)){z+=row([d,v.last.toLocaleString(),v.chunks,spark(v.history)]);}
    document.getElementById("sizes").innerHTML=z;
    let m=row(["task","dataset","events","peak MB","allocated MB"],true);
    for(const t of s.recent_tasks){m+=row([t.task_id,t.dataset,t.events.toLocaleString(),t.peak_mb.toFixed(0),t.memory_mb||"-"]);}
    document.getElementById("memory").innerHTML=m;
    document.getElementById("updated").textContent="updated "+new Date().toLocaleTimeString();
  }catch(e){document.getElementById("state").textContent="(not reachable: "+e+")";}
}
tick(); setInterval(tick,1000);
</script></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/status.json":
            self._send(200, "application/json", json.dumps(self.server.snapshot(), default=str).encode())
        else:
            self._send(404, "text/plain", b"not found: the dashboard serves / and /status.json\n")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        log.debug("dashboard %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.state: dict = {"state": "starting"}
        self.published = time.time()

    def snapshot(self) -> dict:
        with self.lock:
            state = dict(self.state)
        if state.get("state") == "running" and "elapsed_s" in state:  # the clock goes on between tasks
            state["elapsed_s"] += time.time() - self.published
        return state


class Dashboard:
    """A read-only status page; ``url`` once started, :meth:`publish` to update, :meth:`close`.

    Parameters
    ----------
    host : str
        Address to bind (default 127.0.0.1: only this machine sees it).
    port : int
        0: any free port.

    Raises
    ------
    ConfigError
        Nothing can listen there (the port is taken).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        try:
            self._server = _Server((host, port))
        except OSError as exc:
            msg = f"dashboard: cannot serve on {host}:{port} ({exc}); give another port, or True for any free one"
            raise ConfigError(msg) from None
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="dashboard", daemon=True)
        self._thread.start()
        log.info("dashboard at %s", self.url)

    def publish(self, state: dict) -> None:
        """Make ``state`` what ``/status.json`` answers."""
        with self._server.lock:
            self._server.state = state
            self._server.published = time.time()

    def follow(self, status: RunStatus) -> None:
        """Publish ``status`` now and after each of its updates."""
        status.on_update = self.publish
        self.publish(status.snapshot())

    def stop(self, status: RunStatus, state: str) -> None:
        """Publish the run's last snapshot (``state``: done, failed, interrupted) and close."""
        status.on_update = None
        self.publish(status.snapshot(state))
        self.close()

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def dashboard_port(value) -> int | None:
    """The port a ``dashboard`` setting asks for: None for off (None, False), 0 for True, else the int.

    Raises
    ------
    ConfigError
        ``value`` is neither a bool nor a port number.
    """
    if value is None or value is False:
        return None
    if value is True:
        return 0
    if isinstance(value, int) and 0 <= value < 65536:
        return value
    msg = f"dashboard={value!r}: give True (any free port), a port number (0-65535) or False"
    raise ConfigError(msg)


def end_state(exc: BaseException | None) -> str:
    """How a run that raised ``exc`` (None: did not) ended, as the snapshot's ``state``."""
    if exc is None:
        return "done"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


@contextlib.contextmanager
def serving(status: RunStatus, port: int | None, host: str = "127.0.0.1") -> Iterator[Dashboard | None]:
    """Serve ``status`` on a dashboard while the block runs (``port`` None: no dashboard).

    The last snapshot says whether the block ended done, failed or interrupted;
    the server stops at the end of the block, however it ends.
    """
    if port is None:
        yield None
        return
    board = Dashboard(host, port)
    board.follow(status)
    error: BaseException | None = None
    try:
        yield board
    except BaseException as exc:
        error = exc
        raise
    finally:
        board.stop(status, end_state(error))
