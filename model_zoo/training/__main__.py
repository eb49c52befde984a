"""``python -m model_zoo.training RECIPE ...``: the same as ``robench train RECIPE ...``."""
import sys

from .cli import main

sys.exit(main())
