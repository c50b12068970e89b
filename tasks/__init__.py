"""Reusable Prefect tasks: each wraps one core operation with a name, logging and retries."""
