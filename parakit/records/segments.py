"""A switched run in the record: its segments joined into one RunResult, and one row per
segment for the runs frame.

Each segment is measured on its own, as a run of its steps would be (records/summary.py): its
warm-up steps are its first ones (the new layout allocates, compiles and fills its buckets
then), its medians cover its own measured steps. The run's summary is taken over every
segment's measured steps together; the figures that only mean something for one layout
(memory per rank, the breakdown, bytes per step) are each segment's.

The time a switch took (``switch_s``) is the pause in training: from the end of the previous
segment's loop to the start of the next one's, the slowest rank's each (engine clocks, epoch
seconds). Inside it: the state save and the load and re-layout (each the slowest rank's, timed
on the engines), and the rest (results back, the next launch, the model built, the process
group formed where the workers changed). It sits between the segments on the time axis, in no
step's time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from parakit.config.switch import change_text, changed
from parakit.records.recovery import Recovery
from parakit.records.result import OK, RankInfo, RunResult, SegmentRecord, StepRecord
from parakit.records.experts import expert_summary
from parakit.records.summary import diverged_at_step, step_measures, timed_steps
from parakit.records.summary_fields import Summary

if TYPE_CHECKING:
    import pandas

SEGMENT_MEASURES = ("samples_per_s", "step_time_s", "wall_samples_per_s", "comm_bytes_per_step",
                   "compute_time_s", "exposed_comm_time_s", "peak_mem_bytes", "param_bytes",
                   "optimizer_bytes", "energy_j", "avg_power_w", "loss_first", "loss_last")


def segment_record(index: int, part: RunResult, first_step: int, previous: dict[str, Any] | None,
                   switch_s: float | None, save_s: float | None, load_s: float | None,
                   recovered: Recovery | None = None) -> SegmentRecord:
    """One segment as the run's record keeps it; ``recovered``: the death it went on after."""
    label = change_text(changed(previous, part.config)) if previous is not None else "start"
    return SegmentRecord(
        index=index,
        first_step=first_step,
        last_step=first_step + len(part.steps) - 1,
        status=part.status,
        settings=part.config,
        changed=changed(previous, part.config) if previous is not None else {},
        label=recovered.label() if recovered is not None else label,
        world_size=part.world_size,
        switch_s=switch_s,
        state_save_s=save_s,
        state_load_s=load_s,
        summary=replace(part.summary, method=None),  # the words are the run's, said once
        unmeasured=dict(part.unmeasured),
        ranks=[replace(r) for r in part.ranks],  # copies, as the JSON was: the run's last ranks are these too
        recovered=recovered,
    )


def join(parts: list[RunResult], records: list[SegmentRecord], run_id: str, config: dict[str, Any]) -> RunResult:
    """The switched run as one RunResult: the segments' steps on one global step and time axis,
    the run's summary over all measured steps; its config and world size are the first
    segment's (where it started), its ranks the last one's (where it ended)."""
    steps: list[StepRecord] = []
    offset = 0.0
    for part, record in zip(parts, records):
        offset += record.switch_s or 0.0
        for s in part.steps:
            steps.append(replace(s, step=record.first_step + s.step,
                                 time_s=None if s.time_s is None else offset + s.time_s))
        ends = [s.time_s for s in part.steps if s.time_s is not None]
        offset += ends[-1] if ends else 0.0
    last = parts[-1]
    status = next((p.status for p in parts if p.status != OK), OK)
    result = RunResult(
        run_id=run_id, status=status, config=config, world_size=parts[0].world_size, backend=last.backend,
        device_names=last.device_names, steps=steps, ranks=last.ranks, error=next((p.error for p in parts if p.error), None),
        started_at=parts[0].started_at, ended_at=last.ended_at, network=last.network,
        warnings=[w for p in parts for w in p.warnings], segments=records,
    )
    result.summary = run_summary(steps, parts, records, config["batch_size"])
    result.unmeasured = {k: v for p in parts for k, v in p.unmeasured.items() if result.summary.get(k) is None}
    return result


def run_summary(steps: list[StepRecord], parts: list[RunResult], records: list[SegmentRecord],
                batch_size: int) -> Summary:
    """The whole run's figures: throughput and step time over every segment's measured steps;
    energy and the switches' time summed; the rest is per segment (``segments``)."""
    measured = [s for s in steps if not s.warmup] or steps
    losses = [s.loss for s in steps if s.loss is not None]
    counts = [p.summary.measured_steps or 0 for p in parts]
    walls = [(p.summary.wall_samples_per_s, n) for p, n in zip(parts, counts)]
    wall_s = sum(batch_size * n / w for w, n in walls if w and n) if all(w for w, _ in walls) else None
    energies = [p.summary.energy_j for p in parts]
    peaks = [p.summary.peak_mem_bytes for p in parts if p.summary.peak_mem_bytes is not None]
    return Summary(
        # one rule with a run's own: the median step with its interval (records/summary.py)
        **(step_measures(timed_steps(measured), batch_size) if measured else {}),
        measured_steps=sum(counts),
        wall_samples_per_s=batch_size * sum(counts) / wall_s if wall_s else None,
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        peak_mem_bytes=max(peaks) if peaks else None,
        energy_j=sum(energies) if energies and all(e is not None for e in energies) else None,
        # a recovery's pause is time lost to a death (records/recovery.py), not a switch's
        switches=sum(1 for r in records[1:] if r.recovered is None),
        switch_s=sum(r.switch_s or 0.0 for r in records[1:] if r.recovered is None),
        params_in_sync=parts[-1].summary.params_in_sync,
        diverged_at_step=diverged_at_step(steps),
        **expert_summary(measured),  # a mixture of experts' routing, over every segment's steps
    )


def segment_results(results: list[RunResult]) -> list[RunResult]:
    """Each switched run as one RunResult per segment (its id ``RUN/k``, its settings, summary,
    ranks and steps; power samples moved onto the run's time axis), other runs as they are:
    what the per-run figures (breakdown, bytes, memory, power, throughput) draw, so a
    segment is a bar or line of its own."""
    out = []
    for run in results:
        if not run.segments:
            out.append(run)
            continue
        for seg in run.segments:
            steps = [s for s in run.steps if seg.first_step <= s.step <= seg.last_step]
            start = steps[0].time_s - steps[0].step_time_s if steps and steps[0].time_s is not None else 0.0
            ranks = [_shifted(r, start) for r in seg.ranks]
            out.append(RunResult(
                run_id=f"{run.run_id}/{seg.index}", status=seg.status, config=seg.settings,
                world_size=seg.world_size, backend=run.backend, device_names=[r.device_name for r in ranks],
                steps=steps, summary=seg.summary, ranks=ranks, unmeasured=dict(seg.unmeasured),
                started_at=run.started_at, ended_at=run.ended_at, network=run.network))
    return out


def _shifted(rank: RankInfo, start_s: float) -> RankInfo:
    """A segment's rank with its power samples on the whole run's clock."""
    if not rank.power or not rank.power.get("samples"):
        return rank
    samples = [[t + start_s, *rest] for t, *rest in rank.power["samples"]]
    return replace(rank, power={**rank.power, "samples": samples})


def switch_times(run: RunResult) -> list[tuple[int, float | None, str]]:
    """Where each switch of a run happened: (first step, seconds since the run's first step,
    label); the seconds are None without step times."""
    marks = []
    for seg in run.segments[1:]:
        first = next((s for s in run.steps if s.step == seg.first_step), None)
        at = first.time_s - first.step_time_s if first is not None and first.time_s is not None else None
        marks.append((seg.first_step, at, seg.label))
    return marks


def segment_rows(runs: list[RunResult]) -> list[dict[str, Any]]:
    """One row per segment (a run that never switched is one segment), for
    ``load_runs(segments=True)``: the run's id, the segment's settings and its figures."""
    rows = []
    for r in runs:
        records = r.segments or [SegmentRecord(
            index=0, first_step=r.steps[0].step if r.steps else 0, last_step=r.steps[-1].step if r.steps else None,
            status=r.status, settings=r.config, label="start", world_size=r.world_size, summary=r.summary)]
        for seg in records:
            row = {"run_id": r.run_id, "segment": seg.index, "first_step": seg.first_step,
                   "last_step": seg.last_step, "status": seg.status, "world_size": seg.world_size,
                   "switched_to": seg.label, "switch_s": seg.switch_s}
            row.update({k: v for k, v in seg.settings.items() if k not in ("model_options",)})
            row.update({k: seg.summary.get(k) for k in SEGMENT_MEASURES})  # the stored names: the frame's columns
            rows.append(row)
    return rows


def segment_frame(runs: list[RunResult]) -> "pandas.DataFrame":
    import pandas as pd  # only where a table is wanted

    return pd.DataFrame(segment_rows(runs))
