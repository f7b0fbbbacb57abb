"""Every bad setting is refused by the config itself, with one line naming the fix."""

import pytest

from parakit.config import RunConfig, Strategy


def model_fn():
    import torch

    return torch.nn.Linear(4, 2)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(workers=0), "workers must be >= 1"),
        (dict(workers=2.0), "workers must be an integer"),
        (dict(strategy="fsdpp"), "strategy must be one of single, ddp"),
        (dict(model="resnet"), "model must be one of mlp, cnn, gpt"),
        (dict(model=42), "zero-argument callable"),
        (dict(model=model_fn), "needs data="),
        (dict(strategy="single", workers=2), "use strategy ddp"),
        (dict(workers=3, batch_size=64), "use a multiple of 3"),
        (dict(steps=0), "steps must be >= 1"),
        (dict(steps=2, warmup_steps=2), "smaller than steps"),
        (dict(lr=-1), "lr must be a positive number"),
        (dict(precision="fp8"), "precision must be one of fp32"),
        (dict(model="gpt", model_options={"width": 100, "heads": 3}), "divisible by heads"),
        (dict(model="mlp", model_options={"heads": 2}), "no option 'heads'"),
        (dict(loss="ce"), "loss must be a callable"),
    ],
)
def test_bad_settings_are_refused_with_one_line(settings, message):
    with pytest.raises(ValueError) as err:
        RunConfig(**settings)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_strings_become_enums_and_defaults_are_valid():
    config = RunConfig(strategy="DDP", workers=2)
    assert config.strategy is Strategy.DDP
    assert config.per_rank_batch_size == 32
    assert config.describe()["strategy"] == "ddp"


def test_describe_names_callables_instead_of_serialising_them():
    config = RunConfig(model=model_fn, data=lambda step, n: None)
    described = config.describe()
    assert described["model"] == "model_fn"
    assert described["data"] == "<lambda>"
