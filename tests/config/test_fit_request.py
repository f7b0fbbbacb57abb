"""What a fit search asks, checked before any engine: the setting to vary, the limit, the
layouts, and the values every layout can run at."""

import argparse

import pytest

from parakit.config.fit import check_fit
from parakit.config.memory import Checkpointing
from parakit.config.run import RunConfig
from parakit.frontends.fit_cli import layout


def test_a_request_is_checked_and_sized():
    r = check_fit("gpt", "depth", "64MB", ["ddp", {"strategy": "ddp", "zero": 1}, "fsdp"], 2, None, None, {"batch_size": 8})
    assert r.memory_limit == 64 * 2**20 and r.unit == 1 and r.start == 1 and r.high >= 512
    assert r.layouts == [{"strategy": "ddp"}, {"strategy": "ddp", "zero": 1}, {"strategy": "fsdp"}]


@pytest.mark.parametrize("vary, strategies, unit, start", [
    ("depth", ["pipeline"], 1, 2),         # a pipeline of 2 stages needs 2 blocks
    ("width", ["tensor", "ddp"], 4, 4),    # gpt widths are multiples of its 4 heads
    ("batch_size", ["ddp", "single"], 2, 2),  # batches divide over the 2 data-parallel ranks
])
def test_every_value_tried_is_a_run_every_layout_can_make(vary, strategies, unit, start):
    r = check_fit("gpt", vary, "1GB", strategies, 2, None, None, {})
    assert (r.unit, r.start) == (unit, start)


@pytest.mark.parametrize("args, says", [
    (("gpt", "height", "1GB", "ddp"), "vary must be one of depth, width, batch_size"),
    (("cnn", "depth", "1GB", "ddp"), "vary=depth sizes the built-in mlp or gpt; with cnn vary batch_size"),
    (("gpt", "depth", "lots", "ddp"), "memory_limit must be a positive number of bytes"),
    (("gpt", "depth", "1GB", []), "strategies is empty"),
    (("gpt", "depth", "1GB", [{"strategy": "ddp", "zero": 2}]), "zero=2 applies to fsdp or fsdp+tensor, not ddp"),
    (("gpt", "depth", "1GB", [{"strategy": "ddp", "depth": 3}]), "a layout sets depth or workers"),
])
def test_a_bad_request_is_one_line_naming_the_fix(args, says):
    with pytest.raises(ValueError) as caught:
        check_fit(*args, 2, None, None, {})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_memory_levers_are_checked_against_the_layout():
    assert RunConfig(strategy="fsdp", workers=2, zero=3).describe()["zero"] == 3
    assert "zero" not in RunConfig().describe()  # recorded only where set: older runs compare equal
    c = RunConfig(strategy="ddp", workers=2, activation_checkpointing="full")
    assert c.activation_checkpointing is Checkpointing.FULL
    with pytest.raises(ValueError, match="activation checkpointing does not combine with pipelines"):
        RunConfig(strategy="pipeline", workers=2, model="gpt", model_options={"depth": 2}, activation_checkpointing="selective")
    with pytest.raises(ValueError, match="memory_limit"):
        RunConfig(memory_limit=0)


def test_a_layout_on_the_command_line():
    assert layout("fsdp:zero=2:activation-checkpointing=full") == {
        "strategy": "fsdp", "zero": 2, "activation_checkpointing": "full"}
    with pytest.raises(argparse.ArgumentTypeError, match="STRATEGY"):
        layout("ddp:zero")
