"""``python -m switch.tools.banksim``: the simulator as a child process (kswitch-bench-link starts it so)."""

import sys

from switch.tools.banksim.cli import main

sys.exit(main())
