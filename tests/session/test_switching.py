"""Switching settings while a run trains, and resuming saved runs, for real on 2 CPU engines:
the losses of a switched run are the losses of one unswitched run with the same seed and global
batch, because parameters, optimizer state, data position and RNG all carry over (DCP)."""

import re
import threading
import time

import pytest

import parakit
from parakit.config.switch import changed, parse_switch, with_switch
from parakit.plots.runs import PLOTS
from parakit.records.store import state_folder

GPT = dict(model="gpt", batch_size=8, seed=0, profile_every=0, warmup_steps=1)


def _run_ids(figure) -> list[str]:
    return [row[0] for d in figure.data if d.customdata is not None for row in d.customdata]


def relative_gap(a, b) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x.loss - y.loss) / abs(y.loss) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def reference(session):
    """40 steps on one worker: what every switched or resumed run must reproduce."""
    run = session.run(strategy="single", workers=1, steps=40, **GPT)
    assert run.ok, run.error
    return run


def test_ddp_to_fsdp_to_tensor_trains_as_one_single_run(session, reference):
    run = session.run(strategy="ddp", workers=2, steps=24, switch={8: {"strategy": "fsdp"}, 16: {"strategy": "tensor"}},
                      **GPT)
    assert run.ok, run.error
    assert [s.step for s in run.steps] == list(range(24))
    assert relative_gap(run.steps, reference.steps[:24]) < 1e-4
    segments = run.segments
    assert [(g["first_step"], g["last_step"], g["settings"]["strategy"]) for g in segments] == [
        (0, 7, "ddp"), (8, 15, "fsdp"), (16, 23, "tensor")]
    assert [g["label"] for g in segments] == ["start", "fsdp", "tensor"]
    # each switch is timed apart from the steps: the save, the launch and the load
    for g in segments[1:]:
        assert g["switch_s"] >= g["state_save_s"] + g["state_load_s"] > 0
        assert g["summary"]["samples_per_s"] > 0
    times = [s.time_s for s in run.steps]
    assert times == sorted(times)
    assert times[8] - times[7] > segments[1]["switch_s"]  # the switch sits between the steps on the time axis
    assert run.summary["switches"] == 2
    # the state moved through temporary folders, gone with the run
    assert not [p for p in session.runs_dir.iterdir() if p.name.startswith(".")]
    # the figures colour each segment and mark each switch, labelled with what changed
    for kind in ("loss", "step_times", "loss-time"):
        figure = PLOTS[kind]([run])
        assert [d.name.split(" · ")[0] for d in figure.data] == ["ddp x2 gpt", "fsdp x2 gpt", "tensor x2 gpt"]
        assert [a.text for a in figure.layout.annotations if a.text.startswith("→")] == ["→ fsdp", "→ tensor"]
    for kind in ("memory", "throughput"):  # a bar (or a group of them) per segment
        assert {f"{run.run_id}/{k}" for k in range(3)} == set(_run_ids(PLOTS[kind]([run])))
    cost = PLOTS["switches"]([run])
    totals = [sum(bar.y[i] for bar in cost.data) for i in range(2)]
    assert totals == pytest.approx([g["switch_s"] for g in segments[1:]])


def test_ddp_to_context_trains_as_one_single_run(session, reference):
    # context keeps the model's parameter names, so its replicas load the ddp state as they are
    run = session.run(strategy="ddp", workers=2, steps=8, switch={4: {"strategy": "context"}}, **GPT)
    assert run.ok, run.error
    assert relative_gap(run.steps, reference.steps[:8]) < 1e-4
    assert [g["settings"]["strategy"] for g in run.segments] == ["ddp", "context"]


def test_ddp_x2_to_single_to_ddp_x2_switches_workers(session, reference):
    run = session.run(strategy="ddp", workers=2, steps=24, switch={8: {"workers": 1}, 16: {"workers": 2}}, **GPT)
    assert run.ok, run.error
    assert relative_gap(run.steps, reference.steps[:24]) < 1e-4
    assert [(g["world_size"], g["settings"]["strategy"]) for g in run.segments] == [(2, "ddp"), (1, "single"), (2, "ddp")]
    assert len(run.segments[1]["ranks"]) == 1 and len(run.segments[2]["ranks"]) == 2
    rows = parakit.load_runs(session.runs_dir, segments=True)
    mine = rows[rows.run_id == run.run_id]
    assert list(mine.segment) == [0, 1, 2] and list(mine.world_size) == [2, 1, 2]
    assert mine.samples_per_s.notna().all()


def test_a_saved_run_resumed_under_another_layout_equals_one_run(session, reference):
    first = session.run(strategy="ddp", workers=2, steps=10, save_state=True, **GPT)
    assert first.ok and first.state_dir == str(state_folder(session.runs_dir, first.run_id))
    rest = session.run(strategy="fsdp", workers=2, steps=10, resume=first.run_id, **GPT)
    assert rest.ok, rest.error
    assert rest.resumed_from == first.run_id
    assert [s.step for s in rest.steps] == list(range(10, 20))
    assert relative_gap(first.steps + rest.steps, reference.steps[:20]) < 1e-5
    # deleting the run deletes its state: the store does not only grow
    removed = parakit.delete_run(first.run_id, session.runs_dir)
    assert first.state_dir in removed and not state_folder(session.runs_dir, first.run_id).exists()
    with pytest.raises(ValueError, match="has no saved state"):
        session.run(strategy="ddp", workers=2, steps=10, resume=first.run_id, **GPT)


def test_a_live_switch_takes_effect_at_the_step_it_returned(session, reference):
    out, seen = {}, []
    run = lambda: out.update(run=session.run(strategy="ddp", workers=2, steps=400, on_progress=seen.append, **GPT))  # noqa: E731
    thread = threading.Thread(target=run)
    thread.start()
    while not seen:  # the run has made a step
        time.sleep(0.01)
    step = session.switch(strategy="fsdp")
    while seen[-1]["step"] < step + 3:  # the new layout has trained a few steps
        time.sleep(0.01)
    session.stop()  # what follows is an ordinary run: no need to wait for 400 steps
    thread.join()
    run = out["run"]
    assert run.status == "stopped", run.error
    assert [(g["first_step"], g["settings"]["strategy"]) for g in run.segments] == [(0, "ddp"), (step, "fsdp")]
    assert 0 < step < run.steps[-1].step < 400
    assert [s.step for s in run.steps] == list(range(len(run.steps)))
    made = min(len(run.steps), 40)
    assert relative_gap(run.steps[:made], reference.steps[:made]) < 1e-4
    with pytest.raises(RuntimeError, match="no run that can switch"):
        session.switch(precision="bf16")  # nothing is going


def test_switches_that_cannot_be_made_are_refused_before_any_engine_is_touched(session):
    runs = len(list(session.runs_dir.glob("*.json")))
    bad = [
        ({8: {"batch_size": 16}}, "batch_size cannot be switched"),
        ({30: {"strategy": "fsdp"}}, "between 1 and 23"),
        ({8: {"precision": "fp16"}}, "fp16"),  # not on a CPU, as for a fresh run
        ([8], "switch must be a dict"),
    ]
    for switch, message in bad:
        with pytest.raises(ValueError, match=message):
            session.run(strategy="ddp", workers=2, steps=24, switch=switch, **GPT)
    # a last segment of one step has no room for compile's warm-up: refused before the first step,
    # not after nine trained ones (the preflight checks each segment as run_segments launches it)
    with pytest.raises(ValueError, match=re.escape("the segment from step 9 (1 step(s)): compile needs warmup_steps >= 1")):
        session.run("mlp", compile=True, steps=10, switch={9: {"precision": "bf16"}})
    assert len(list(session.runs_dir.glob("*.json"))) == runs


def test_a_pipeline_takes_the_state_by_its_stages_parameter_names(session, reference):
    run = session.run(strategy="ddp", workers=2, steps=16, switch={8: {"strategy": "pipeline", "schedule": "1f1b"}},
                      **GPT)
    assert run.ok, run.error
    assert [g["settings"]["strategy"] for g in run.segments] == ["ddp", "pipeline"]
    assert relative_gap(run.steps, reference.steps[:16]) < 1e-4
    # interleaved: each rank holds two stages (blocks 0 and 2, or 1 and 3), saved and loaded as one
    deeper = {**GPT, "model_options": {"depth": 4}}
    alone = session.run(strategy="single", workers=1, steps=12, **deeper)
    interleaved = session.run(strategy="ddp", workers=2, steps=12, **deeper,
                              switch={4: {"strategy": "pipeline", "schedule": "interleaved"}, 8: {"strategy": "fsdp"}})
    assert interleaved.ok, interleaved.error
    assert relative_gap(interleaved.steps, alone.steps) < 1e-4


def test_the_hybrids_take_the_state_on_their_2d_meshes(session, reference):
    """2 workers, so each mesh has a dimension of 1: the 2-D code paths (DTensors on a 2-D mesh,
    a pipeline replicated) without 4 engines on 2 cores."""
    run = session.run(strategy="ddp", workers=2, steps=24, **GPT, switch={
        6: {"strategy": "hybrid", "hybrid": "fsdp+tensor", "mesh": "1x2"},
        12: {"hybrid": "pipeline+ddp", "mesh": "2x1"},
        18: {"hybrid": "ddp+tensor", "mesh": "2x1"}})
    assert run.ok, run.error
    assert [g["settings"].get("hybrid") for g in run.segments] == [None, "fsdp+tensor", "pipeline+ddp", "ddp+tensor"]
    assert relative_gap(run.steps, reference.steps[:24]) < 1e-4


def test_zero_1_shares_of_the_optimizer_state_move_by_name(session, reference):
    run = session.run(strategy="ddp", workers=2, steps=24, zero=1, **GPT,
                      switch={8: {"strategy": "fsdp"}, 16: {"strategy": "ddp", "zero": 1}})
    assert run.ok, run.error
    assert [(g["settings"]["strategy"], g["settings"].get("zero")) for g in run.segments] == [
        ("ddp", 1), ("fsdp", None), ("ddp", 1)]  # zero=1 is ddp's: it goes with ddp, and comes back when asked
    assert relative_gap(run.steps, reference.steps[:24]) < 1e-4


def test_a_damaged_or_unfitting_state_is_refused_in_one_line(session):
    saved = session.run(strategy="single", workers=1, steps=4, save_state=True, **GPT)
    with pytest.raises(ValueError, match="seed must be its 0"):
        session.run(strategy="single", workers=1, steps=4, resume=saved.run_id, **{**GPT, "seed": 1})
    (state_folder(session.runs_dir, saved.run_id) / ".metadata").unlink()
    with pytest.raises(ValueError, match="damaged or incomplete") as e:
        session.run(strategy="single", workers=1, steps=4, resume=saved.run_id, **GPT)
    assert "\n" not in str(e.value)


def test_switch_options_parse_and_apply_as_the_cli_writes_them():
    assert parse_switch("8:strategy=fsdp,precision=bf16") == (8, {"strategy": "fsdp", "precision": "bf16"})
    assert parse_switch("4:sync=streaming-diloco:8,2") == (4, {"sync": "streaming-diloco:8,2"})
    assert parse_switch("4:strategy=pipeline,split=blocks.1,blocks.3,microbatches=4") == (
        4, {"strategy": "pipeline", "split": ("blocks.1", "blocks.3"), "microbatches": 4})
    with pytest.raises(ValueError, match="STEP:key=value"):
        parse_switch("fsdp")
    # one worker means single; more again means ddp; the layout's own settings go with it
    assert with_switch({"strategy": "fsdp", "workers": 2}, {"workers": 1})["strategy"] == "single"
    assert with_switch({"strategy": "single", "workers": 1}, {"workers": 2})["strategy"] == "ddp"
    # one worker sends nothing: the way workers synchronised goes with them, unless asked for
    alone = with_switch({"strategy": "ddp", "workers": 2, "compression": "powersgd:4", "sync": "local-sgd:3"},
                        {"workers": 1})
    assert "compression" not in alone and "sync" not in alone
    assert changed({"sync": "every-step"}, {"sync": "diloco:4", "outer_lr": 0.7}) == {"sync": "diloco:4"}
    assert "tp_plan" not in with_switch({"strategy": "tensor", "workers": 2, "tp_plan": {"a": "colwise"}},
                                        {"strategy": "ddp"})
