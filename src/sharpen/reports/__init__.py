"""Reports from run stores: an HTML page with plots per run, and a comparison of runs."""

from sharpen.reports.html import compare_runs, write_report

__all__ = ["compare_runs", "write_report"]
