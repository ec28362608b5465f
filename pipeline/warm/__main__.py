"""`python -m pipeline.warm MODULE ARGS...` (every job) and `python -m pipeline.warm serve ...` (the server)."""

import sys

from pipeline.warm.cli import main

sys.exit(main())
