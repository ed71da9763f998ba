"""Reports: run folders (finished or killed) -> PNG plots and a markdown table.

python -m psgd.report runs/a runs/b --out report/ [--link bandwidth=1Gbit,latency=50us]
                      [--target 0.9 [--metric test_accuracy]] [--bytes total|up|down] [--payload]
"""

from psgd.report.cli import write_report
from psgd.report.metrics import RunMetrics, run_metrics
from psgd.report.runs import Run, load_run, load_runs

__all__ = ["Run", "RunMetrics", "load_run", "load_runs", "run_metrics", "write_report"]
