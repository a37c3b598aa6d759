"""``python -m hep_executor``: the ``hep-executor`` command."""

import sys

from hep_executor.cli.main import main

sys.exit(main())
