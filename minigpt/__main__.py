"""`python -m minigpt`: see :mod:`minigpt.cli`."""

import sys

from .cli import main

sys.exit(main())
