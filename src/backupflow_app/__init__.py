"""The application layer: the ``backupflow`` command and the demo.

Layers point down: this package imports the flows (``flows/``), which import the tasks
(``tasks/``), which import the core (:mod:`backupflow`).  Nothing below imports this.

In a source checkout ``flows`` and ``tasks`` are the folders at the top of the repository
(the editable install puts the repository on the path).  An installed wheel does not claim
those generic top-level names in site-packages: it carries them inside this package, under
``layers/``, and that folder is added to the end of the path only for this process, so a
checkout's own ``flows`` (a worker's working directory) still wins.
"""

from __future__ import annotations

import sys
from pathlib import Path

_LAYERS = Path(__file__).with_name("layers")
if _LAYERS.is_dir() and str(_LAYERS) not in sys.path:
    sys.path.append(str(_LAYERS))
