"""`python -m zbifrost.client`: the client's command line (zbifrost.client.cli)."""

import sys

from .cli import main

sys.exit(main())
