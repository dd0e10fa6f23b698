"""`python -m bilm ...` is the `bilm` command."""
import sys

from .cli import main

sys.exit(main())
