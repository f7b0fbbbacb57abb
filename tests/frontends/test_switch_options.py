"""``%parakit switch`` takes exactly the settings a live switch may change (config/switch.py)."""

import pytest
from IPython.core.error import UsageError

from parakit.config.switch import SWITCHABLE
from parakit.frontends import options
from parakit.frontends.magics_runs import RunMagics


def test_the_switch_magic_offers_every_switchable_setting_and_no_other():
    parser = RunMagics._switch.parser
    offered = {a.dest for a in parser._actions if a.dest != "help"}
    assert offered == set(SWITCHABLE)


def test_options_left_out_are_not_switched_and_plans_become_dicts():
    args = RunMagics._switch.parser.parse_args(
        ["--zero", "1", "--tp-plan", "fc1=colwise", "--tp-plan", "fc2=rowwise", "--activation-checkpointing", "full"])
    assert options.switch_settings(args) == {
        "zero": 1, "tp_plan": {"fc1": "colwise", "fc2": "rowwise"}, "activation_checkpointing": "full"}


def test_a_bad_value_is_refused_by_the_parser():
    with pytest.raises(UsageError, match="--zero: invalid int value: 'two'"):
        RunMagics._switch.parser.parse_args(["--zero", "two"])


def test_the_run_options_take_a_models_own_plan_and_its_blocks():
    import argparse

    p = argparse.ArgumentParser()
    options.add_run_options(p)
    given = options.run_settings(p.parse_args(["--tp-plan", "auto", "--blocks", "model.layers", "--sync-batchnorm"]))
    assert (given["tp_plan"], given["blocks"], given["sync_batchnorm"]) == ("auto", "model.layers", True)
    given = options.run_settings(p.parse_args(["--tp-plan", "layers.*.fc=colwise", "--blocks", "a,b"]))
    assert (given["tp_plan"], given["blocks"]) == ({"layers.*.fc": "colwise"}, ("a", "b"))
    with pytest.raises(ValueError, match="give it alone"):
        options.run_settings(p.parse_args(["--tp-plan", "auto", "--tp-plan", "fc1=colwise"]))
