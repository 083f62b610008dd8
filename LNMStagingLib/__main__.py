"""``python -m LNMStagingLib ...``: the ``lnmstaging`` command line, for interpreters without the console
script on their PATH (the Slicer module starts its prediction child process this way)."""

import sys

from .cli.main import main

sys.exit(main())
