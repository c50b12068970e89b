"""Prefect flows: one per job, each a thin composition of tasks over the core."""
