"""`python -m phasetrain ...`: the `phasetrain` command (see `phasetrain.cli`)."""
import sys

from phasetrain.cli import main

sys.exit(main())
