"""What a real run costs, on the shared 2 CPU engines: recorded when the run ends, with its
method, saved with the run; the session's prices, a run's own and a sweep's."""

import pytest

import parakit
from parakit.records.run_cost import run_wall_s
from parakit.records.store import read_runs

TINY = dict(model="mlp", model_options={"width": 32, "depth": 2}, batch_size=16, steps=4, profile_every=0)


def cores(result):
    return sum(r.threads for r in result.ranks)


def test_a_run_records_its_cost_and_how_with_the_session_prices_or_its_own(session):
    result = session.run(workers=2, **TINY)
    assert result.ok, result.error
    assert result.cost_usd > 0
    table = parakit.Prices().device_hour("cpu", gpu=False)
    assert result.cost_usd == pytest.approx(run_wall_s(result) / 3600 * cores(result) * table.value)
    assert f"{cores(result)} CPU core(s) at ${table.value:g} per core-hour ({table.source})" in result.cost_method["cost_usd"]
    if result.summary["energy_j"] is None:  # no RAPL counters readable here: said, not made up
        assert result.energy_cost_usd is None and result.co2_g is None
        assert result.unmeasured["co2_g"] == f"no energy was measured: {result.unmeasured['energy_j']}"
    else:
        assert result.energy_cost_usd > 0 and result.co2_g > 0
    (saved,) = [r for r in read_runs(session.runs_dir) if r.run_id == result.run_id]
    assert (saved.cost_usd, saved.cost_method) == (result.cost_usd, result.cost_method)

    own = session.run(workers=2, prices=parakit.Prices(device_hour_usd=3600.0), **TINY)  # $1 a core-second
    assert own.cost_usd == pytest.approx(run_wall_s(own) * cores(own))
    assert "given (device_hour_usd)" in own.cost_method["cost_usd"]

    session.prices = parakit.Prices(cpu_core_hour_usd=0.0)
    try:
        (swept,) = session.sweep(workers=[1], **TINY)
        assert swept.cost_usd == 0.0 and "$0 per core-hour (given)" in swept.cost_method["cost_usd"]
        (priced,) = session.sweep(workers=[1], prices=parakit.Prices(cpu_core_hour_usd=3600.0), **TINY)
        assert priced.cost_usd == pytest.approx(run_wall_s(priced) * cores(priced))
    finally:
        session.prices = parakit.Prices()


def test_prices_that_are_not_prices_are_refused_before_any_engine(session):
    with pytest.raises(ValueError, match=r"prices must be parakit.Prices\(...\), e.g. Prices\(kwh_usd=0.1\) \(got dict\)"):
        parakit.Session(workers=1, device="cpu", prices={"kwh_usd": 0.1})
    with pytest.raises(ValueError, match="prices must be parakit.Prices"):
        session.run(workers=2, prices=0.1, **TINY)
    assert not session.busy
