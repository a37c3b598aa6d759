"""``hep-executor status ADDRESS``: print the numbers of a running dashboard in the
terminal (as ``work_queue_status``). The dashboard itself is served by
:class:`hep_executor.analysis.Dashboard` (``hep-executor run --dashboard``,
``run(..., dashboard=True)``, ``HepExecutor(dashboard=True)``).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from hep_executor.errors import ConfigError

__all__ = ["fetch_status", "format_status", "status_main"]

log = logging.getLogger(__name__)


def fetch_status(address: str, timeout: float = 5.0) -> dict:
    """``/status.json`` of a dashboard at ``address`` (``HOST:PORT`` or a URL).

    Raises
    ------
    ConfigError
        Nothing answers there, or it is not a dashboard.
    """
    url = address if "://" in address else f"http://{address}"
    url = url.rstrip("/") + "/status.json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        msg = f"no hep-executor dashboard at {address} ({exc}); give the address 'hep-executor run --dashboard' printed"
        raise ConfigError(msg) from None


def format_status(s: dict) -> list[str]:
    """The terminal lines of a status snapshot."""
    def part(name):
        v = s.get(name) or {}
        total = "?" if v.get("total") is None else f"{'~' if v.get('estimated') else ''}{v['total']:,}"
        return f"{name} {v.get('done', 0):,}/{total}"

    eta = "?" if s.get("eta_s") is None else f"{s['eta_s']:.0f} s"
    lines = [f"run {s.get('state', '?')}: " + ", ".join(part(k) for k in ("files", "chunks", "events")),
             f"{s.get('events_per_s', 0):,.0f} events/s, ETA {eta}, failures {s.get('failed', 0)}, "
             f"retries {s.get('retries', 0)}"]
    for w in s.get("workers", []):
        lines.append(f"  {w['name']:<12} {w.get('host', ''):<16} busy {w.get('busy', 0)}/{w.get('cores', 0)}")
    for ds, v in (s.get("chunk_sizes") or {}).items():
        lines.append(f"  {ds:<16} chunk {v['last']:,} events, {v['chunks']} done")
    return lines


def status_main(args) -> int:
    """``hep-executor status ADDRESS [--watch]``: print a running dashboard's numbers."""
    while True:
        for line in format_status(fetch_status(args.address)):
            print(line)
        if not args.watch:
            return 0
        time.sleep(2.0)
        print()
