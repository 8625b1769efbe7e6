"""`python -m kmr_dsl` is the `kmr` command."""

import sys

from kmr_dsl.cli import main

sys.exit(main(sys.argv[1:]))
