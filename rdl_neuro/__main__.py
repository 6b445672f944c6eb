"""``python -m rdl_neuro``: the same as the ``rdl-neuro`` command."""
import sys

from rdl_neuro.cli import main

sys.exit(main())
