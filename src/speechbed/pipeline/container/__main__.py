"""``python -m speechbed.pipeline.container build|run|shell``: see ``container.cli``.

Run by ``make docker``, ``make run_in_container`` and ``make shell``.
"""

from speechbed.pipeline.container.cli import main

raise SystemExit(main())
