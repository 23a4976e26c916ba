"""``python -m durable_tasks``: the ``durable`` command."""

from durable_tasks.cli import main

main()
