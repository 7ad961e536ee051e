"""``python -m rmserve`` (and ``torchrun ... -m rmserve train``): the ``rmserve`` command."""

import sys

from rmserve.cli import main

sys.exit(main())
