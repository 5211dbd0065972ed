"""``python -m avdetect COMMAND ...``: the same as the ``avdetect`` console script."""

import sys

from avdetect.cli import main

if __name__ == "__main__":
    sys.exit(main())
