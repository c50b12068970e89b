"""Settings: one pydantic-settings object, built once at the edge and passed down.

Sources, highest priority first:

1. keyword arguments (tests, the demo);
2. environment variables ``BACKUPFLOW_*``, nested with ``__``
   (``BACKUPFLOW_DATABASE__NAME=gantt``);
3. the env-file named by ``BACKUPFLOW_CONFIG``: ``BACKUPFLOW_*`` lines;
4. a fleet site's values (``BACKUPFLOW_FLEET``, ``BACKUPFLOW_SITE``; :mod:`backupflow.fleetfile`);
5. the env-file's seed keys (the shell-style ``/etc/workload-optimization/backup.conf``:
   ``DB_SERVER``, ``DB_USER``, ``DB_PASSWORD`` and ``DB_NAME``);
6. the defaults, which reproduce the seed's strategy.

Secrets are :class:`~pydantic.SecretStr`: they print as ``**********``.  Every field has a
description and its bounds; ``docs/configuration.md`` is generated from them
(``python -m backupflow.settings_doc``).  The six jobs' schedules are the source of truth for
schedules: ``prefect.yaml`` copies them and a test keeps the two equal.

The models are split by concern, and a fleet file's site and a single installation are
validated by the same ones:

- :mod:`~backupflow.config.jobs`: the six jobs (schedule, retention);
- :mod:`~backupflow.config.repository`: the tiers, their retention overrides, the pipeline;
- :mod:`~backupflow.config.database`: the database, composed of each engine's own fields
  (``backupflow/engines/*settings.py``, pydantic only);
- :mod:`~backupflow.config.files`: the file sets and the post-restore command;
- :mod:`~backupflow.config.people`: owners, the drill's objectives, failover;
- :mod:`~backupflow.config.keys`: the repository keys;
- :mod:`~backupflow.config.loader`: :class:`Settings`, its sources and :func:`load_settings`;
- :mod:`~backupflow.config.checks`: validators the models share.
"""

from __future__ import annotations

from backupflow.config.database import DatabaseSettings
from backupflow.config.files import API_ROOT, FileSetSettings, FilesSettings
from backupflow.config.jobs import Job, JobSettings
from backupflow.config.keys import KeySettings
from backupflow.config.loader import (
    CONFIG_ENV_VAR,
    LEGACY_KEYS,
    Settings,
    current_settings,
    load_settings,
    secret_paths,
    use_settings,
)
from backupflow.config.people import Contact, DrillSettings, FailoverSettings, OwnersSettings
from backupflow.config.repository import (
    PipelineSettings,
    RepositorySettings,
    RetentionOverrides,
    TierSettings,
)

__all__ = [
    "API_ROOT",
    "CONFIG_ENV_VAR",
    "LEGACY_KEYS",
    "Contact",
    "DatabaseSettings",
    "DrillSettings",
    "FailoverSettings",
    "FileSetSettings",
    "FilesSettings",
    "Job",
    "JobSettings",
    "KeySettings",
    "OwnersSettings",
    "PipelineSettings",
    "RepositorySettings",
    "RetentionOverrides",
    "Settings",
    "TierSettings",
    "current_settings",
    "load_settings",
    "secret_paths",
    "use_settings",
]
