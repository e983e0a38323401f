"""``python -m hypernoise <command>``: the same as the ``hypernoise`` command."""

import sys

from hypernoise.cli.main import main

sys.exit(main())
