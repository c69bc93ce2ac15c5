"""One analysis per module over the ``requests`` / ``batches`` views; the facade composes them.

See docs/analysis.md for the definitions, thresholds and sources.
"""

from inferaudit_analyzer.analyses._common import AnalysisParams, Window, compute_window

__all__ = ["AnalysisParams", "Window", "compute_window"]
