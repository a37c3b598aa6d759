"""``python -m hep_executor.cli``: the ``hep-executor`` command."""

import sys

from hep_executor.cli.main import main

sys.exit(main())
