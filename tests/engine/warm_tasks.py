"""A task module that fills a cache when a slot imports it, as a physicist's module full of
corrections or a processor's lookup tables does: the cache stays in the slot from task to task."""

import multiprocessing
import time

CACHE_MB = 250
# only slots fill it: the test process imports this module too, to name the task
CACHE = (bytearray(b"\x01") * (CACHE_MB * 2**20)
         if multiprocessing.current_process().name.startswith("hep-slot") else bytearray())


def allocate_beside_cache(mb, hold=0.3):
    """Hold ``mb`` MB for ``hold`` seconds beside the slot's cache; return the cache's size in MB."""
    block = bytearray(b"\x01") * int(mb * 2**20)
    time.sleep(hold)
    del block
    return len(CACHE) // 2**20
