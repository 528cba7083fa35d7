"""ssl-bench: self-supervised learning methods and evaluations on one shared core."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
