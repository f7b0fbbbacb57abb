"""strategy expert in the advisor: candidates, bytes on the wire, compute and memory per rank."""

import pytest

from parakit.config.run import RunConfig


def test_the_advisor_predicts_the_all_to_all_and_half_the_experts_per_rank():
    """strategy expert in the advisor: a candidate for a mixture only; its bytes are the four
    all-to-alls per block plus the replicated parameters' all-reduce, and each rank holds the
    replicated parameters and half of the experts."""
    from parakit.advisor.calibrate import engines_hardware
    from parakit.advisor.candidates import candidates
    from parakit.advisor.costs import estimate
    from parakit.advisor.inputs import Calibration
    from parakit.engine.shape import model_shape

    link = {"alpha_s": 1e-4, "beta_bytes_per_s": 1e9}
    cal = Calibration(device="cpu", device_name="test cpu", engine_count=2, threads_per_rank=1, batch_size=8,
                      pass_fixed_s=0.0, per_row_s=1e-3, step_fixed_s=0.0, single_step_s={"fp32": 0.008},
                      collectives={"all_reduce": link, "send_recv": link}, memory_bytes=2**33)
    moe = dict(model="gpt", model_options={"experts": 4, "seq_len": 32, "width": 64, "heads": 4}, batch_size=8)
    dense = dict(moe, model_options={"seq_len": 32, "width": 64, "heads": 4})
    strategies = lambda base: {c.settings["strategy"] for c in candidates(2, base, ["fp32"])[0]}  # noqa: E731
    assert "expert" in strategies(moe) and "expert" not in strategies(dense)

    shape = model_shape(RunConfig(strategy="single", **moe))
    experts = sum(p.expert_params for p in shape.parts)
    assert 0 < experts < shape.params
    hw = engines_hardware(cal, cores=2)
    single = estimate(RunConfig(strategy="single", **moe), shape, cal, hw, {"strategy": "single"})
    spread = estimate(RunConfig(strategy="expert", workers=2, **moe), shape, cal, hw, {"strategy": "expert"})
    a2a = 4 * 2 * (8 / 2 * 32) * 64 * 4 * (1 / 2)  # 4 calls x depth 2, 128 tokens of width 64 in fp32, half leave
    assert spread.collective_bytes_per_step == a2a + (shape.params - experts) * 4
    assert spread.compute_time_s == pytest.approx(single.compute_time_s / 2, rel=0.1)
    assert spread.exposed_comm_time_s > 0 and spread.fits
