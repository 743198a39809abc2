"""``python -m pacs_workbench`` is the ``pacs-workbench`` command."""

from pacs_workbench.cli import main

raise SystemExit(main())
