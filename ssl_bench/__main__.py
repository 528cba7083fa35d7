"""``python -m ssl_bench``: the command line (:mod:`ssl_bench.cli`)."""

import sys

from ssl_bench.cli import COMMANDS, main  # noqa: F401 (tests and users import main from here)

if __name__ == "__main__":
    sys.exit(main())
