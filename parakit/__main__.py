"""``python -m parakit`` is the ``parakit`` command."""

import sys

from parakit.frontends.cli import main

sys.exit(main())
