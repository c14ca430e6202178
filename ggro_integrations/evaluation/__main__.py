"""``python -m ggro_integrations.evaluation``: the evaluation command (see ``cli``)."""

import sys

from .cli import main

sys.exit(main())
