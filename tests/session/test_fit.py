"""What fits, found with real short runs on 2 CPU engines: fsdp fits a deeper gpt than ddp
under one limit, every try is a run in the store, and each has the advisor's prediction."""

import pytest

from parakit.plots.fit import fit_figure
from parakit.records.store import read_runs
from parakit.records.memory import measured_memory_per_rank
from parakit.session.fit import CPU_MEASURE

LIMIT = 24 * 2**20  # gpt width 128 at batch 8: ddp fits depth 4 here, fsdp 6 (measured 2026-12-02)


def test_fsdp_fits_a_deeper_model_than_ddp_under_the_same_limit(session):
    result = session.fit("gpt", vary="depth", memory_limit="24MB", strategies=["ddp", "fsdp"], batch_size=8, high=16)
    assert result.measure == CPU_MEASURE and result.memory_limit == LIMIT
    ddp, fsdp = result.layouts
    assert ddp.label == "ddp x2 gpt" and fsdp.label == "fsdp x2 gpt"
    assert 1 <= ddp.largest < fsdp.largest, (ddp.largest, fsdp.largest)
    runs = {r.run_id: r for r in read_runs(session.runs_dir)}
    for layout in result.layouts:
        # the largest fit, and the next value up (what the search saw) did not
        assert layout.at_largest.bytes <= LIMIT
        assert any(not t.fits and t.value == layout.largest + 1 for t in layout.tries), layout.tries
        for t in layout.tries:
            assert t.run_id in runs and t.predicted > 0  # every try is a saved run, with a prediction
            measured, parts = measured_memory_per_rank(runs[t.run_id].ranks)
            assert measured == t.bytes == sum(parts.values()) and t.fits == (measured <= LIMIT)
    table = result.table()
    assert list(table["largest depth"]) == [ddp.largest, fsdp.largest]
    assert set(table.columns) >= {"MiB per rank", "predicted MiB", "parameters", "gradients", "optimizer state",
                                  "activations"}
    fig = fit_figure(result)
    assert [t.name for t in fig.data][1:5] == ["parameters", "gradients", "optimizer state", "activations"]


def test_a_limit_nothing_fits_under_says_so_after_one_run(session):
    result = session.fit("gpt", vary="depth", memory_limit="1MB", strategies="ddp", batch_size=8)
    (layout,) = result.layouts
    assert layout.largest is None and len(layout.tries) == 1 and not layout.tries[0].fits
    assert result.table()["largest depth"].isna().all()


def test_a_bad_request_touches_no_engine(session):
    before = len(read_runs(session.runs_dir))
    with pytest.raises(ValueError, match="zero=1 applies to ddp, not fsdp"):
        session.fit("gpt", strategies=[{"strategy": "fsdp", "zero": 1}])
    assert len(read_runs(session.runs_dir)) == before
