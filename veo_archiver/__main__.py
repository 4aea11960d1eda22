"""``python -m veo_archiver``: the same command line as the ``veo-archiver`` console script."""

from __future__ import annotations

import sys

from veo_archiver.cli.main import main

sys.exit(main())
