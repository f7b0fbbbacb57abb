"""What a run costs (records/run_cost.py) on hand-built runs: device-hours x a price, energy x a
price per kWh and a grid's CO2; prices given instead of the table's; what is missing is None
with its reason; older run files load; the frame, the headline and the demo's table show it."""

import json

import pytest

from parakit.config.prices import Prices, price_table, usd_text
from parakit.records.result import FAILED, RankInfo, RunResult, StepRecord, headline
from parakit.records.run_cost import cost_note, record_costs
from parakit.records.store import read_runs, runs_frame, save_run
from parakit.records.summary_fields import Summary

HOUR_S = 3600


def cpu_run(run_id="20260101-000000-aaaaaa", *, seconds=36.0, threads=(1, 1), energy_j=None, status="ok"):
    """A CPU run of len(threads) ranks that ran ``seconds`` from start to end."""
    ranks = [RankInfo(rank=i, engine_id=i, pid=100 + i, host="box", device="cpu", device_name="Test CPU",
                      threads=t) for i, t in enumerate(threads)]
    run = RunResult(run_id=run_id, status=status, config={"strategy": "ddp", "model": "mlp", "workers": len(ranks),
                                                           "batch_size": 64},
                    world_size=len(ranks), backend="gloo", device_names=["Test CPU"] * len(ranks), ranks=ranks,
                    started_at="2026-01-01T00:00:00.000+00:00",
                    ended_at=f"2026-01-01T00:00:{seconds:06.3f}+00:00" if seconds < 60 else "2026-01-01T01:00:00.000+00:00")
    if status == "ok":
        run.steps = [StepRecord(step=0, loss=2.0, step_time_s=0.1, rank_step_time_s=[0.1] * len(ranks), warmup=False)]
        run.summary = Summary(step_time_s=0.1, samples_per_s=640.0, loss_first=2.0, loss_last=1.5,
                              energy_j=energy_j)
    if energy_j is None:
        run.unmeasured["energy_j"] = "no RAPL counters readable"
    return run


def gpu_run(name="NVIDIA H100 80GB HBM3", gpus=(0, 1)):
    """A GPU run of an hour, one rank per listed GPU index (a repeated index: a shared GPU)."""
    run = cpu_run(seconds=HOUR_S, threads=[1] * len(gpus), energy_j=3.6e6)
    run.ranks = [RankInfo(rank=i, engine_id=i, pid=100 + i, host="box", device="cuda:0", device_name=name,
                          gpu_index=g, threads=8) for i, g in enumerate(gpus)]
    return run


def test_cost_is_the_whole_wall_clock_times_the_cores_held_times_their_price():
    run = cpu_run(seconds=36.0, threads=(2, 2))  # 0.01 h x 4 cores
    record_costs(run, Prices(cpu_core_hour_usd=0.5))
    assert run.cost_usd == pytest.approx(0.01 * 4 * 0.5)
    how = run.cost_method["cost_usd"]
    assert "36 s, the whole run's wall clock (started_at to ended_at" in how
    assert "4 CPU core(s) at $0.5 per core-hour (given)" in how
    table = price_table()["cpu_core_hour_usd"]
    record_costs(run, Prices())  # the shipped table's price, with its source
    assert run.cost_usd == pytest.approx(0.01 * 4 * table["value"])
    assert table["source"] in run.cost_method["cost_usd"]


def test_gpus_are_priced_by_kind_each_once_and_given_prices_come_first():
    run = gpu_run("NVIDIA H100 80GB HBM3", gpus=(0, 1))
    record_costs(run, Prices())
    h100 = price_table()["gpu_hour_usd"]["H100"]
    assert run.cost_usd == pytest.approx(2 * h100["value"])  # an hour of 2 GPUs; their host cores are in the price
    assert f"H100: {h100['source']}" in run.cost_method["cost_usd"]
    record_costs(run, Prices(gpu_hour_usd={"H100": 2.0}))
    assert run.cost_usd == pytest.approx(4.0) and "given for H100" in run.cost_method["cost_usd"]
    record_costs(run, Prices(gpu_hour_usd={"H100": 2.0}, device_hour_usd=1.0))  # one price for every device
    assert run.cost_usd == pytest.approx(2.0)
    shared = gpu_run(gpus=(0, 0))  # two engines on one GPU hold one GPU
    record_costs(shared, Prices(device_hour_usd=1.0))
    assert shared.cost_usd == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "kind"), [
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"), ("NVIDIA A100-PCIE-40GB", "A100"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"), ("NVIDIA A10", "A10"), ("NVIDIA GH200 480GB", "GH200"), ("NVIDIA H200", "H200"),
    ("Tesla T4", "T4"),
])
def test_a_kind_matches_whole_words_of_the_name_the_most_specific_first(name, kind):
    assert Prices().device_hour(name, gpu=True).value == price_table()["gpu_hour_usd"][kind]["value"]


def test_a_gpu_without_a_price_has_no_cost_and_says_how_to_give_one():
    run = gpu_run("NVIDIA GeForce RTX 4090")
    record_costs(run, Prices())
    assert run.cost_usd is None and "cost_usd" not in run.cost_method
    assert "no 'NVIDIA GeForce RTX 4090' GPU" in run.unmeasured["cost_usd"]
    assert "gpu_hour_usd" in run.unmeasured["cost_usd"]
    assert run.energy_cost_usd is not None  # the energy has its own price
    record_costs(run, Prices(gpu_hour_usd={"RTX 4090": 0.7}))  # costed again: the reason goes
    assert run.cost_usd == pytest.approx(1.4) and "cost_usd" not in run.unmeasured


def test_energy_is_priced_per_kwh_and_its_co2_by_the_grid():
    run = cpu_run(energy_j=7.2e6)  # 2 kWh
    record_costs(run, Prices(kwh_usd=0.2, grid_g_per_kwh=100))
    assert run.energy_cost_usd == pytest.approx(0.4) and run.co2_g == pytest.approx(200)
    assert "2 kWh (over the measured steps" in run.cost_method["energy_cost_usd"]
    assert "$0.2 per kWh (given)" in run.cost_method["energy_cost_usd"]
    assert "100 g CO2 per kWh (given)" in run.cost_method["co2_g"]
    record_costs(run, Prices())
    grid = price_table()["grid_g_per_kwh"]
    assert run.co2_g == pytest.approx(2 * grid["value"]) and grid["source"] in run.cost_method["co2_g"]


def test_without_measured_energy_its_cost_and_co2_are_none_with_the_reason_and_the_cost_stands():
    run = cpu_run(energy_j=None)
    record_costs(run, Prices())
    assert run.energy_cost_usd is None and run.co2_g is None
    assert run.unmeasured["energy_cost_usd"] == "no energy was measured: no RAPL counters readable"
    assert run.unmeasured["co2_g"] == run.unmeasured["energy_cost_usd"]
    assert run.cost_usd > 0 and "energy_cost_usd" not in run.cost_method


def test_a_failed_run_cost_its_wall_clock_and_unknown_cores_are_no_cost():
    failed = cpu_run(status=FAILED)
    record_costs(failed, Prices(cpu_core_hour_usd=1.0))
    assert failed.cost_usd == pytest.approx(0.01 * 2)
    assert failed.unmeasured["energy_cost_usd"] == "no energy was measured: no RAPL counters readable"
    unknown = cpu_run(threads=(1, None))
    record_costs(unknown, Prices())
    assert unknown.cost_usd is None and "rank 1's threads were not recorded" in unknown.unmeasured["cost_usd"]


@pytest.mark.parametrize(("prices", "says"), [
    (dict(kwh_usd=-0.1), "kwh_usd must be a number >= 0"),
    (dict(grid_g_per_kwh=float("nan")), "grid_g_per_kwh must be a number >= 0"),
    (dict(device_hour_usd=True), "device_hour_usd must be a number >= 0"),
    (dict(gpu_hour_usd={"H100": "2"}), "gpu_hour_usd['H100'] must be a number >= 0"),
    (dict(gpu_hour_usd={"": 2.0}), "gpu_hour_usd's keys are GPU kinds"),
])
def test_prices_check_themselves(prices, says):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("(", r"\(")):
        Prices(**prices)


def test_an_older_run_file_without_costs_loads_with_none_and_says_so(tmp_path):
    old = cpu_run().to_dict()
    for name in ("cost_usd", "energy_cost_usd", "co2_g", "cost_method"):
        del old[name]
    (tmp_path / f"{old['run_id']}.json").write_text(json.dumps(old))
    (run,) = read_runs(tmp_path)
    assert run.cost_usd is None and run.cost_method == {}
    assert cost_note([run]) == "no cost: not costed (an older record)"
    assert "cost" not in headline(run)


def test_the_frame_the_headline_and_the_demo_table_show_the_cost(tmp_path):
    from parakit.frontends.text import explained_table

    run = cpu_run(energy_j=3.6e6)
    record_costs(run, Prices(cpu_core_hour_usd=0.01, kwh_usd=0.1, grid_g_per_kwh=500))
    save_run(run, tmp_path)
    (loaded,) = read_runs(tmp_path)
    assert (loaded.cost_usd, loaded.energy_cost_usd, loaded.co2_g) == (run.cost_usd, run.energy_cost_usd, run.co2_g)
    row = runs_frame([loaded]).iloc[0]
    assert row["cost_usd"] == pytest.approx(0.0002) and row["energy_cost_usd"] == pytest.approx(0.1)
    assert row["co2_g"] == pytest.approx(500)
    assert headline(loaded).endswith(", cost $0.00020")
    table = explained_table([loaded])
    assert table.splitlines()[0].rstrip().endswith("cost") and "$0.00020" in table.splitlines()[1]


def test_dollars_keep_two_significant_digits():
    assert [usd_text(v) for v in (0.0, 1.234e-5, 0.5, 1234.5)] == ["$0", "$0.000012", "$0.50", "$1,234.50"]
