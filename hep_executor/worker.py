"""``python -m hep_executor.worker``: the worker command that batch scripts call.

Kept at this path for job scripts on clusters; the worker itself is
:mod:`hep_executor.engine.worker`.
"""

from __future__ import annotations

import sys

from hep_executor.engine.worker import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
