"""`python -m agent start|dev|connect --room R` (the livekit-agents CLI around the worker)."""

import sys

from .worker import main

sys.exit(main())
