"""``python -m mismatch`` runs the command-line interface."""

import sys

from mismatch.cli import main

sys.exit(main())
