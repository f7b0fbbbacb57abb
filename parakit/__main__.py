"""``python -m parakit`` is the ``parakit`` command."""

import sys

from parakit.cli import main

sys.exit(main())
