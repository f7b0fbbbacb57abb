"""The advisor's predicted cost (advisor/pricing.py): the devices a configuration holds for 1000
samples at a price per device-hour, and ranking by it. From a made-up calibration: no engine."""

import dataclasses

import pytest

from parakit.advisor.advice import advise, check_request
from parakit.advisor.calibrate import engines_hardware
from parakit.advisor.candidates import rank
from parakit.advisor.costs import Estimate
from parakit.advisor.hardware import PRESETS
from parakit.advisor.pricing import priced
from parakit.config.prices import Prices

from test_advisor import calibration


def test_ranking_by_cost_puts_the_cheapest_first_then_the_unpriced_then_what_does_not_fit():
    fast = Estimate(settings={"n": 1}, step_time_s=0.1, cost_per_1k_samples_usd=0.02)
    cheap = Estimate(settings={"n": 2}, step_time_s=0.2, cost_per_1k_samples_usd=0.01)
    unpriced = Estimate(settings={"n": 3}, step_time_s=0.05)
    unfit = Estimate(settings={"n": 4}, step_time_s=0.01, cost_per_1k_samples_usd=0.001, fits=False, reason="needs 9 GiB")
    every = [unfit, unpriced, fast, cheap]
    assert [e.settings["n"] for e in rank(every, "cost")] == [2, 1, 3, 4]
    assert [e.settings["n"] for e in rank(every, "time")] == [3, 1, 2, 4]


def test_cpu_engines_cost_the_cores_their_ranks_compute_on():
    cal = calibration(threads_per_rank=2, engine_count=2)
    hw = engines_hardware(cal, cores=4)
    guesses = [Estimate(settings={"workers": n}, step_time_s=0.1, samples_per_s=1000.0) for n in (1, 2, 4, 8)]
    costed, how = priced(guesses, hw, cal, Prices(cpu_core_hour_usd=3.6))
    # 1 s for 1000 samples at $0.001 per core-second: 2 threads a rank, then cores // ranks (at
    # least 1): 8 ranks on 4 cores count a thread each, as a run of 8 engines on them is costed
    assert [e.cost_per_1k_samples_usd for e in costed] == pytest.approx([0.002, 0.004, 0.004, 0.008])
    assert "$3.6 per core-hour (given)" in how


def test_a_gpu_without_a_price_is_not_costed_and_the_advice_says_why():
    hw = dataclasses.replace(PRESETS["h100-ib"], device_name="Mystery GPU")
    costed, how = priced([Estimate(settings={"workers": 2}, step_time_s=0.1, samples_per_s=10.0)], hw,
                         calibration(), Prices())
    assert costed[0].cost_per_1k_samples_usd is None
    assert how.startswith("no cost: the price table has no 'Mystery GPU' GPU")


def test_advise_by_cost_weighs_fewer_workers_and_ranks_the_cheapest_first(tmp_path):
    kwargs = dict(hardware="h100-ib", calibration=calibration(), runs_dir=tmp_path, strategies=["single", "ddp"],
                  compressions=["none"], precisions=["bf16"], prices=Prices(device_hour_usd=3.6))
    by_cost = advise("mlp", workers=8, rank_by="cost", **kwargs)
    counts = [e.settings["workers"] for e in by_cost.estimates]
    assert sorted(set(counts)) == [1, 2, 4, 8]
    costs = [e.cost_per_1k_samples_usd for e in by_cost.estimates]
    assert costs == sorted(costs)
    for e in by_cost.estimates:  # 1000 samples' time x the workers' GPUs x $0.001 a GPU-second
        assert e.cost_per_1k_samples_usd == pytest.approx(1000 / e.samples_per_s * e.settings["workers"] * 0.001)
    assert "up to 8 worker(s), h100-ib, cheapest first" in by_cost.summary()
    assert "$3.6 per GPU-hour (given" in by_cost.summary()
    assert "cost_per_1k_samples_usd" in by_cost.frame().columns
    by_time = advise("mlp", workers=8, **kwargs)
    assert {e.settings["workers"] for e in by_time.estimates} == {8}
    steps = [e.step_time_s for e in by_time.estimates]
    assert steps == sorted(steps) and by_time.rank_by == "time"


def test_rank_by_is_checked_before_any_engine():
    with pytest.raises(ValueError, match="rank_by must be time or cost"):
        check_request("mlp", rank_by="money")
    with pytest.raises(ValueError, match=r"prices must be parakit.Prices\(...\)"):
        check_request("mlp", prices={"kwh_usd": 0.1})


def test_the_advise_command_refuses_a_wrong_rank_or_price_in_one_line(capsys):
    from parakit.frontends.cli import main

    for argv, says in ((["--rank-by", "money"], "argument --rank-by: invalid choice: 'money'"),
                       (["--price-device-hour", "-2"], "argument --price-device-hour: expected a number >= 0")):
        assert main(["advise", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"parakit: error: {says}") and "\n" not in err
