"""``python -m cbs``: the same as the ``cbs`` command.

``cbs`` is a namespace package shared by several distributions; this module is
its only file outside a subpackage and ships with the core distribution.
"""

import sys

from cbs.kernel.cli import main

if __name__ == "__main__":
    sys.exit(main())
