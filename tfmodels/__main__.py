"""`python -m tfmodels ...` is the `tfmodels` command."""
import sys

from tfmodels.cli import main

sys.exit(main())
