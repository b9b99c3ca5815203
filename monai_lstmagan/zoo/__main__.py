"""``python -m monai_lstmagan.zoo export ...`` / ``... verify DIR``: see :func:`monai_lstmagan.zoo.cli.main`."""

import sys

from monai_lstmagan.zoo.cli import main

sys.exit(main())
