"""``python -m backupflow``."""

from backupflow.cli import main

main()
