"""``python -m decomp``: the command line (:func:`decomp.cli.main`)."""

import sys

from decomp.cli import main

if __name__ == "__main__":
    sys.exit(main())
