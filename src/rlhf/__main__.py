"""`python -m rlhf <command>`: the same as the `rlhf` script (and what `accelerate launch -m rlhf` runs)."""

import sys

from .cli import main

sys.exit(main())
