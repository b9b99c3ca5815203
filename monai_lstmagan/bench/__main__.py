"""``python -m monai_lstmagan.bench [--device cpu|cuda] [--json OUT.json] [--quick]``: see :func:`~.cli.main`."""

from monai_lstmagan.bench.cli import main

main()
