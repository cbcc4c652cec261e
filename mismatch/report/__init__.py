"""The study report: Parquet rows -> the paper's tables, tests, ablations and figures as one HTML page.

This package reads Parquet (and prediction ``.npz``) files only; it never imports torch or the
training code, so a report can be built on any machine that has the results.
"""

from mismatch.report.build import ReportOptions, build_report

__all__ = ["ReportOptions", "build_report"]
