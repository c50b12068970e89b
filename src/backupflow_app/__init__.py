"""The application layer: the ``backupflow`` command and the demo.

Layers point down: this package imports the flows (``flows/``), which import the tasks
(``tasks/``), which import the core (:mod:`backupflow`).  Nothing below imports this.

In a source checkout ``flows`` and ``tasks`` are the folders at the top of the repository
(the editable install puts the repository on the path).  An installed wheel does not claim
those generic top-level names in site-packages: it carries them inside this package, under
``layers/``, and that folder is added to the end of the path only for this process, so a
checkout's own ``flows`` (a worker's working directory) still wins.

Without ``PREFECT_API_URL`` a command that runs flows makes Prefect start a temporary local
server (a subprocess that inherits this environment).  Its telemetry service would try to
reach the internet and, on a fresh ``PREFECT_HOME``, print "Failed to send telemetry" or a
``database is locked`` traceback in the middle of a command's output; so the app turns server
analytics off unless the caller chose otherwise.  A server the operator runs (``make serve``,
docker/) sets the same variables itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

_LAYERS = Path(__file__).with_name("layers")
if _LAYERS.is_dir() and str(_LAYERS) not in sys.path:
    sys.path.append(str(_LAYERS))
