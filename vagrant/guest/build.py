#!/usr/bin/env python3
"""Build (and cache) the small Debian guest that has the real sch_netem.

The builder lives in the package (testbed/guest/build.py, used by `testbed
kernels`); this script runs it from a checkout: see that module's docstring.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for testbed.guest

from testbed.guest.build import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
