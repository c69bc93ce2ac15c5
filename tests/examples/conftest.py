"""Make the repository root importable so tests can import the ``examples`` package.

(``examples/`` is not an installed package; pytest's default import mode only puts the test
directory on ``sys.path``.) Equivalent to ``pythonpath = ["."]`` in the pytest config.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
