"""``python -m avq_plugin.bench``: the same command as ``avq-bench``."""

import sys

from .cli import main

sys.exit(main())
