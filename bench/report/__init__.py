"""Reports: MLflow runs → pandas tables → matplotlib figures → Markdown / HTML / LaTeX (``render_report``)."""

from bench.report.report import default_report_dir, render_report

__all__ = ["default_report_dir", "render_report"]
