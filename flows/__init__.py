"""Prefect flows: one per job, each a thin wrapper around the core's backup or restore run
(parameters checked, steps run as Prefect tasks, artifacts published)."""
