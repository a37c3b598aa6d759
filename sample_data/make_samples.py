"""Write the committed NanoAOD-like sample set into this folder (see README.md).

Usage, from the repository root::

    python sample_data/make_samples.py

Extra arguments go to ``hep-executor make-samples`` (``--events``, ``--files``,
``--seed``, ``--n-wc``, ``--extra-branches``, ``--block-size``, ``--out``).
"""

import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))  # run from a checkout without installing
    from hep_executor.demo.samples import main

    argv = sys.argv[1:]
    sys.exit(main(argv if "--out" in argv else ["--out", here, *argv]))
