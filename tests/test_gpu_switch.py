"""Switching while a run trains, on a CUDA machine (the device tool); skipped elsewhere. One
engine: NCCL refuses two ranks on one GPU, and gloo cannot send CUDA memory between ranks."""

import pytest

from parakit.cluster.placement import visible_gpus

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not visible_gpus()[0], reason="needs a CUDA GPU: " + str(visible_gpus()[1])),
]

# Large enough for the matmuls to decide the step time, so bf16's tensor cores show.
GPT = {"model": "gpt", "model_options": {"width": 1024, "depth": 8, "heads": 16, "seq_len": 256},
       "batch_size": 32, "seed": 0}


def test_a_precision_switch_shows_the_step_time_drop_in_its_segments(tmp_path):
    import parakit

    with parakit.Session(workers=1, runs_dir=tmp_path, progress=False) as s:
        run = s.run(strategy="single", workers=1, steps=40, switch={20: {"precision": "bf16"}}, **GPT)
        assert run.ok, run.error
        resumed = s.run(strategy="single", workers=1, steps=10, precision="bf16", save_state=True, **GPT)
        again = s.run(strategy="single", workers=1, steps=10, precision="bf16", resume=resumed.run_id, **GPT)
        assert again.ok, again.error
    fp32, bf16 = (g["summary"]["step_time_s"] for g in run.segments)
    print(f"\nstep time fp32 {fp32 * 1e3:.1f} ms -> bf16 {bf16 * 1e3:.1f} ms; "
          f"switch {run.segments[1]['switch_s']:.2f} s (save {run.segments[1]['state_save_s']:.2f}, "
          f"load {run.segments[1]['state_load_s']:.2f})")
    assert bf16 < 0.8 * fp32
    assert [g["settings"]["precision"] for g in run.segments] == ["fp32", "bf16"]
    assert run.steps[20].loss < run.steps[0].loss  # it went on training, on the device
    assert [s.step for s in again.steps] == list(range(10, 20))
