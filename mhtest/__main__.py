"""python -m mhtest: the same entry point as the `mhtest` console script."""

from __future__ import annotations

import sys

from mhtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
