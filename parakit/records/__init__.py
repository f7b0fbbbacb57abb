"""What a run produced: the records an engine sends back, the run's result and summary, the
JSON store, and the runs frame with its one speed-up rule. Standard library (pandas for the
frame, imported when a frame is asked for)."""

from parakit.records.result import (  # noqa: F401  (the names users import from here)
    FAILED, OK, STOPPED, CommBenchResult, RankInfo, RunResult, StepRecord, headline, run_label,
)

__all__ = ["FAILED", "OK", "STOPPED", "CommBenchResult", "RankInfo", "RunResult", "StepRecord", "headline",
           "run_label"]
