"""``python -m opmas.cli``: the ``opmas`` command."""
import sys

from opmas.cli import main

sys.exit(main())
