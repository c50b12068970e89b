"""``python -m backupflow``."""

from backupflow_app.cli import main

main()
