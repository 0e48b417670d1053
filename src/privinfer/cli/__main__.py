"""`python -m privinfer.cli ...`: the same as the `privinfer` script (servers start this way)."""

import sys

from privinfer.cli.main import main

sys.exit(main())
