"""``python -m attnspec ...``: the ``attnspec`` command, where its script is not on PATH
(a ``pip install --target`` folder, a machine without the console script)."""

import sys

if __name__ == "__main__":
    from attnspec.conformance.cli import main

    sys.exit(main())
