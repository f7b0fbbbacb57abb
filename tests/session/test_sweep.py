"""Session.sweep: every combination checked before the first run, run in order, and one
speed-up per run wherever it is shown (runs frame, table, figure)."""

from __future__ import annotations

import pytest

import parakit
from parakit.plots.runs import speedup, speedup_table
from parakit.records.store import runs_frame
from parakit.session.sweep import combinations


def test_combinations_run_workers_last_and_pass_other_settings_through():
    combos = combinations([1, 2], precision=["fp32", "bf16"], model="mlp", steps=3)
    assert [(c["precision"], c["workers"]) for c in combos] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(c["model"] == "mlp" and c["steps"] == 3 for c in combos)
    # A split is a list by nature: not swept.
    assert combinations(None, strategy="pipeline", split=["layers.1"])[0]["split"] == ["layers.1"]
    with pytest.raises(ValueError, match="precision is an empty list"):
        combinations(1, precision=[])


def test_a_combination_that_does_not_fit_refuses_the_whole_sweep_before_a_run(session):
    before = len(parakit.load_runs(session.runs_dir))
    with pytest.raises(ValueError, match=r"1 of 2 combinations do not fit, e.g. ddp x2 mlp fp16: fp16 .* needs a GPU"):
        session.sweep([2], precision=["fp32", "fp16"], steps=3)
    assert len(parakit.load_runs(session.runs_dir)) == before


def test_a_sweep_runs_every_combination_and_every_view_gives_one_speedup(session):
    seen = []
    results = session.sweep([1, 2], precision=["fp32", "bf16"], model="mlp", steps=4, batch_size=16,
                            on_run=lambda i, n, label, r: seen.append((i, n, label, r is not None)))
    assert [(r.config["precision"], r.world_size) for r in results] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(r.ok for r in results)
    assert seen[:2] == [(1, 4, "ddp x1 mlp", False), (1, 4, "ddp x1 mlp", True)]
    frame = parakit.load_runs(session.runs_dir).set_index("run_id")
    table = speedup_table(results).set_index("run_id")
    figure = speedup(results)
    drawn = {(x, t.name): y for t in figure.data if t.name != "ideal (linear)" for x, y in zip(t.x, t.y)}
    for r in results:
        assert frame.at[r.run_id, "speedup"] == pytest.approx(table.at[r.run_id, "speedup"])
    bf16_one, bf16_two = results[2], results[3]
    # bf16 x2 is compared with bf16 x1, never with the fp32 baseline
    assert frame.at[bf16_two.run_id, "baseline"] == bf16_one.run_id
    expected = bf16_two.summary["samples_per_s"] / bf16_one.summary["samples_per_s"]
    assert table.at[bf16_two.run_id, "speedup"] == pytest.approx(expected)
    assert drawn[(2, "ddp, mlp, bf16, batch 16")] == pytest.approx(expected)


def test_repeats_alternate_and_give_the_intervals_and_verdicts_of_the_one_rule(session):
    # batch 16 on 2 CPU workers: the all-reduce costs more than halving the compute saves
    results = session.sweep([1, 2], model="mlp", batch_size=16, steps=8, repeats=2)
    assert [r.world_size for r in results] == [1, 2, 1, 2]  # A B A B, not A A B B
    rows = runs_frame(results)  # the store also counts the earlier test's identical runs as repeats
    assert list(rows["repeats"]) == [2, 2, 2, 2]
    two = rows.iloc[1]
    assert two["verdict"] == "slower" and two["speedup_high"] < 1, two[["speedup", "speedup_low", "speedup_high"]]
    assert rows.iloc[1]["speedup"] == rows.iloc[3]["speedup"]  # one figure per configuration, from its repeats
    # the clearly faster one: faster (1 worker, from its repeats)
    assert parakit.compare(results[0::2], results[1::2]).verdict == "faster"
    for r in results:
        s = r.summary
        assert s["samples_per_s_low"] < s["samples_per_s"] < s["samples_per_s_high"]
        assert s["other_cpu_share"] is not None and 0 <= s["other_cpu_share"] <= 1
    with pytest.raises(ValueError, match="repeats must be a whole number from 1 to 20"):
        session.sweep([1], model="mlp", repeats=0)


def test_identical_settings_show_no_measurable_difference(session):
    # 3 repeats a side, alternated: a single 8-step pair of a 12-ms step differs by 30 % often
    # enough on 2 cores to fail a test at the nominal 5 %; repeats make the check a robust one
    runs = session.sweep([1], model="mlp", batch_size=64, steps=12, repeats=6)
    found = parakit.compare(runs[0::2], runs[1::2])
    assert found.verdict == "no measurable difference", found
    assert found.repeats == (3, 3) and found.low < 1 < found.high


def test_a_busy_machine_is_measured_and_said_in_one_line(session):
    import subprocess
    import sys
    import warnings

    quiet = session.run("mlp", workers=1, steps=30, batch_size=256)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process on a core
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            busy = session.run("mlp", workers=1, steps=30, batch_size=256)
    finally:
        burner.kill()
        burner.wait()
    assert busy.summary["other_cpu_share"] > 0.3 > quiet.summary["other_cpu_share"]
    assert any("the machine was busy" in w for w in busy.warnings)
    assert any("the machine was busy" in str(w.message) for w in said)
