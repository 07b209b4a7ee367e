"""Compare run folders and write the report. Reads files only; never trains or evaluates.

- :func:`compare` returns the comparison table and the pairwise statistics as a dict.
- :func:`write_report` writes one self-contained ``report.html`` and its ``report.md`` twin.
"""

from alexbench.report.compare import RunRecord, compare, load_run
from alexbench.report.render import write_report

__all__ = ["compare", "write_report", "load_run", "RunRecord"]
