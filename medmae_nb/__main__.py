"""``python -m medmae_nb SUBCOMMAND …``: the same as the ``medmae`` console script (:mod:`medmae_nb.cli`)."""

import sys

from .cli import main

sys.exit(main())
