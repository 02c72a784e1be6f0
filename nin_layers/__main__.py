"""`python -m nin_layers` runs the `nin-layers` command line."""

import sys

from nin_layers.cli import main

sys.exit(main())
