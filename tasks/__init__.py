"""The Prefect task layer: each step of the core's runs becomes a named Prefect task
(:mod:`tasks.steps`), and :mod:`tasks.backuplog` logs the flows' own events."""
