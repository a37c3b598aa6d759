"""Small helpers shared by the tests."""

from __future__ import annotations

import time

import psutil


def try_assert(condition, timeout: float = 10.0, interval: float = 0.05, message: str = "") -> None:
    """Poll ``condition()`` until it is true or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")


def children() -> list[psutil.Process]:
    """Living child processes of this test process (zombies excluded)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def drain(manager, timeout: float = 60.0) -> list:
    """Wait until the manager is empty; return every result."""
    results = []
    deadline = time.monotonic() + timeout
    while not manager.empty():
        if time.monotonic() > deadline:
            raise AssertionError(f"manager not empty after {timeout} s: {manager.status()}")
        results.extend(manager.wait(timeout=1.0))
    return results
