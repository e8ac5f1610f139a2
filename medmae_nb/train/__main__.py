"""``python -m medmae_nb.train RECIPE …``: the older spelling of ``medmae train`` / ``python -m medmae_nb train``.

An entry point, not a module the package imports: it hands its arguments to :mod:`medmae_nb.cli`, which sits above
:mod:`medmae_nb.pretrained` (and so above this package), keeping the import arrows pointing down.
"""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
