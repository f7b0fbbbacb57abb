"""The sentence that says where a run's time went: from the run's own breakdown, bytes and
power; a missing figure is said with its reason."""

import re
from dataclasses import replace

import pytest

from parakit.records.explain import bound_by, power_note, where_time_went
from parakit.records.result import FAILED, OK, RunResult
from parakit.records.summary_fields import Summary


def run(workers, compute_ms, exposed_ms, idle_ms, comm_ms=None, *, sent=None, power=None, status=OK):
    summary = Summary(compute_time_s=compute_ms / 1e3, exposed_comm_time_s=exposed_ms / 1e3,
                      idle_time_s=idle_ms / 1e3, comm_time_s=(comm_ms if comm_ms is not None else exposed_ms) / 1e3,
                      comm_bytes_per_step=sent)
    unmeasured = {"energy_j": "no RAPL counter readable"}
    if power is not None:
        summary = replace(summary, energy_j=10.0, avg_power_w=power, samples_per_j=12.5)
        unmeasured = {}
    return RunResult(run_id=f"r{workers}", status=status, config={"strategy": "ddp", "model": "mlp"},
                     world_size=workers, backend="gloo", device_names=["cpu"] * workers,
                     summary=summary if status == OK else Summary(), unmeasured=unmeasured)


@pytest.mark.parametrize("parts, bound", [
    ((80, 10, 10), "compute-bound"), ((30, 60, 10), "communication-bound"), ((20, 10, 70), "idle-bound"),
])
def test_the_largest_part_of_the_step_names_what_bounds_it(parts, bound):
    assert bound_by(run(2, *parts).summary) == bound


def test_a_two_worker_sentence_gives_shares_bytes_and_what_was_hidden():
    text = where_time_went(run(2, 30, 60, 10, comm_ms=75, sent=16 * 2**20))
    assert text == ("communication-bound: 30% computing, 60% waiting for communication "
                    "(16.0 MB a step, 75.0 ms of it, 15.0 ms hidden behind compute), 10% idle")


def test_one_worker_sends_nothing_and_power_is_added_where_measured():
    text = where_time_went(run(1, 90, 0, 10, power=40.0))
    assert text == ("90% of the step computing, 10% idle (Python and waits between operators); "
                    "one worker sends nothing; 40 W, 12.5 samples/J")


def test_no_breakdown_or_a_failed_run_says_why():
    r = run(2, 1, 1, 1)
    r.summary = replace(r.summary, compute_time_s=None)
    r.unmeasured["compute_time_s"] = "the profiler was off (profile_every=0)"
    assert where_time_went(r) == "no time breakdown (the profiler was off (profile_every=0))"
    assert where_time_went(run(2, 1, 1, 1, status=FAILED)) == "failed: no measured steps to explain"


def test_the_power_note_gives_each_reason_once_and_nothing_when_all_measured():
    assert power_note([run(1, 1, 0, 0), run(2, 1, 1, 1)]) == "power and energy not measured: no RAPL counter readable"
    assert power_note([run(1, 1, 0, 0, power=5.0)]) is None


def test_against_its_baseline_it_says_how_compute_changed_and_what_communication_added():
    text = where_time_went(run(2, 22.7, 14.1, 1.6, comm_ms=18.6), baseline=run(1, 12.2, 0, 1.1))
    assert text.endswith("; against 1 worker, compute went 12.2 -> 22.7 ms a step (ideal 6.1) and "
                         "communication added 14.1 ms not hidden")
    # with throughputs measured, it opens with the speed-up and its interval (records.intervals)
    two, one = run(2, 22.7, 14.1, 1.6, comm_ms=18.6), run(1, 12.2, 0, 1.1)
    two.summary, one.summary = replace(two.summary, samples_per_s=100.0), replace(one.summary, samples_per_s=400.0)
    assert re.match(r"2 workers: 0\.25x \(0\.\d\d-0\.\d\d\); compute-bound: ", where_time_went(two, one))
