"""The sync modes' settings: delayed:D, diloco:H and streaming-diloco:H,F parse from text and
print back; every mistake and every combination that cannot work is refused by the config
itself, before any engine, in one line that says why."""

import pytest

from parakit.config.run import RunConfig
from parakit.config.sync import OUTER_LR, OUTER_MOMENTUM

DDP = dict(strategy="ddp", workers=2)


@pytest.mark.parametrize("text, printed, every, fragments", [
    ("delayed:1", "delayed:1", 1, None),
    ("DiLoCo:8", "diloco:8", 8, None),
    (" streaming-diloco: 8 , 2 ", "streaming-diloco:8,2", 8, 2),
    ("streaming-diloco:4,4", "streaming-diloco:4,4", 4, 4),
])
def test_sync_modes_parse_from_text_and_print_back(text, printed, every, fragments):
    sync = RunConfig(sync=text, **DDP).sync
    assert (str(sync), sync.every, sync.fragments) == (printed, every, fragments)


@pytest.mark.parametrize("settings, message", [
    # parse errors
    (dict(sync="delayed"), "sync delayed needs a count, e.g. delayed:4 (D >= 1)"),
    (dict(sync="delayed:0"), "delayed D must be >= 1"),
    (dict(sync="diloco:x"), "diloco H must be a number"),
    (dict(sync="streaming-diloco:8"), "needs H and F, e.g. streaming-diloco:8,2"),
    (dict(sync="streaming-diloco:8,"), "needs H and F"),
    (dict(sync="streaming-diloco:8,0"), "streaming-diloco F must be >= 1"),
    (dict(sync="streaming-diloco:8,3"), "H (8) must be a multiple of F (3)"),
    (dict(sync="streaming-diloco:8,two"), "streaming-diloco F must be a number"),
    (dict(sync="diloco:8", outer_lr=0), "outer_lr must be a positive number"),
    (dict(sync="diloco:8", outer_lr="fast"), "outer_lr must be a number"),
    (dict(sync="diloco:8", outer_momentum=1.0), "outer_momentum must be in [0, 1)"),
    (dict(sync="diloco:8", outer_momentum=True), "outer_momentum must be a number"),
    # refused combinations, each with its reason
    (dict(outer_lr=0.5), "outer_lr applies to sync diloco and streaming-diloco (sync is every-step)"),
    (dict(sync="delayed:1", outer_momentum=0.5), "outer_momentum applies to sync diloco"),
    (dict(sync="delayed:1", strategy="fsdp"), "applies to ddp, not fsdp: it needs DDP's per-bucket"),
    (dict(sync="diloco:8", strategy="fsdp"), "applies to ddp, not fsdp: each rank trains a full replica"),
    (dict(sync="streaming-diloco:8,2", model="gpt", strategy="tensor"), "applies to ddp, not tensor"),
    (dict(sync="delayed:1", compression="powersgd:4"), "powersgd averages only a part of it"),
    (dict(sync="delayed:2", compression="topk:0.01"), "use compression none, fp16 or bf16 with it"),
    (dict(sync="diloco:8", compression="randomk:0.01"), "randomk compresses per-step gradients"),
    (dict(sync="streaming-diloco:8,2", compression="powersgd:4"), "streaming-diloco all-reduces pseudo-gradients"),
    (dict(sync="delayed:1", precision="fp16"), "delayed does not combine with fp16"),
    (dict(sync="diloco:8", zero=1), "diloco's ranks keep their own gradients"),
    (dict(sync="delayed:1", zero=1), "delayed's ranks keep their own gradients"),
])
def test_mistakes_and_combinations_that_cannot_work_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError) as err:
        RunConfig(**{**DDP, **settings})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("settings", [
    dict(sync="delayed:1", compression="fp16"), dict(sync="delayed:3", compression="bf16", precision="bf16"),
    dict(sync="diloco:8", compression="bf16"), dict(sync="streaming-diloco:8,4", compression="fp16"),
    dict(sync="diloco:4", precision="fp16"),  # GPU engines: inner steps scale their own loss
])
def test_casts_combine_with_the_new_modes(settings):
    RunConfig(**DDP, **settings)


def test_outer_settings_are_recorded_for_diloco_only():
    assert RunConfig(sync="diloco:8", **DDP).describe()["outer_lr"] == OUTER_LR == 0.7
    assert RunConfig(sync="diloco:8", **DDP).describe()["outer_momentum"] == OUTER_MOMENTUM == 0.9
    chosen = RunConfig(sync="streaming-diloco:8,2", outer_lr=1, outer_momentum=0, **DDP).describe()
    assert (chosen["outer_lr"], chosen["outer_momentum"]) == (1.0, 0.0)
    # other modes record nothing new, so earlier runs' records compare equal
    for sync in ("every-step", "local-sgd:4", "delayed:1"):
        assert "outer_lr" not in RunConfig(sync=sync, **DDP).describe()


def test_the_command_line_takes_the_outer_settings():
    from parakit.frontends import cli, options

    args = cli.build_parser().parse_args(["run", "--sync", "diloco:8", "--outer-lr", "0.5", "--outer-momentum", "0.8"])
    settings = options.run_settings(args)
    assert (settings["sync"], settings["outer_lr"], settings["outer_momentum"]) == ("diloco:8", 0.5, 0.8)
    plain = options.run_settings(cli.build_parser().parse_args(["run"]))
    assert plain["outer_lr"] is None and plain["outer_momentum"] is None
