"""What a run produced: the records an engine sends back, the run's result and summary, the
JSON store, and the runs frame with its one speed-up rule. Standard library (pandas for the
frame, imported when a frame is asked for).

``RULES`` is the one place that says which function computes each figure, label and check a
user compares: every front end (magics, panel, CLI, demo, report), the advisor and the
benchmarks call these, and nothing else computes them (docs/measuring.md shows the table).
"""

from parakit.records.commbench import CommBenchResult  # noqa: F401  (the names users import from here)
from parakit.records.result import (  # noqa: F401
    FAILED, OK, STOPPED, RankInfo, RunResult, StepRecord, headline, run_label,
)

RULES = {
    "step time and samples/s of a run": "parakit.records.summary:step_measures",
    "a figure's 95 % interval (one run, or repeats)": "parakit.records.intervals:combine",
    "one configuration against another, with its verdict": "parakit.records.intervals:compare",
    "the verdict's words": "parakit.records.intervals:verdict",
    "a speed-up as shown": "parakit.records.intervals:speedup_text",
    "speed-up and strong/weak efficiency against 1 worker": "parakit.records.frame:add_scaling",
    "speed-up against a chosen baseline": "parakit.records.frame:speedup_against",
    "a run's label": "parakit.records.result:run_label",
    "memory per rank, measured": "parakit.records.memory:measured_memory_per_rank",
    "memory per rank, predicted": "parakit.config.memory_model:memory_per_rank",
    "a switched run's segment settings": "parakit.config.switch:segment_settings",
    "the cores a host gives its engines": "parakit.config.hosts:usable_cores",
    "a hybrid mesh's sizes": "parakit.config.layouts:mesh_sizes",
    "a setting that is a finite number": "parakit.config.choices:is_number",
    "a mixture of experts' load imbalance": "parakit.records.experts:load_imbalance",
    "a straggler rank": "parakit.records.stragglers:find_stragglers",
    "what a profiler event counts as (breakdown and timeline)": "parakit.engine.breakdown:classify",
    "a pipeline's planned schedule in time": "parakit.records.pipeline_plan:planned_schedule",
}
"""Figure -> ``module:function`` that computes it."""

__all__ = ["FAILED", "OK", "RULES", "STOPPED", "CommBenchResult", "RankInfo", "RunResult", "StepRecord",
           "headline", "run_label"]
