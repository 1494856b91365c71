"""The report stage: an experiment's runs -> Table I, per-massif tables, figures, the paper's analysis.

This ``__init__`` only re-exports; the work is in ``build`` (the report and the comparison),
``collect`` (runs -> recomputed metrics and tables), ``analysis``, ``activity``, ``fusion``,
``figures``, ``provenance`` and ``render``.
"""

from avalanche_hpc.report.build import build_report, compare_experiments, report_summary
from avalanche_hpc.report.collect import load_experiment
from avalanche_hpc.report.provenance import report_is_current

__all__ = ["build_report", "compare_experiments", "load_experiment", "report_is_current", "report_summary"]
