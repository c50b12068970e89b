"""``python -m backupflow_app``."""

from backupflow_app.entry import main

main()
