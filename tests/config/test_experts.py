"""A mixture-of-experts gpt and strategy expert, checked before any engine, in one line each."""

import pytest

from parakit.config.run import RunConfig

MOE = dict(model="gpt", model_options={"experts": 4, "top_k": 2})


def test_expert_takes_a_mixture_whose_experts_the_workers_divide():
    assert RunConfig(strategy="expert", workers=2, **MOE).dims.expert == 2
    with pytest.raises(ValueError, match="strategy expert needs a mixture of experts"):
        RunConfig(model="gpt", strategy="expert", workers=2)
    with pytest.raises(ValueError, match="spreads 4 experts over 3 workers"):
        RunConfig(strategy="expert", workers=3, batch_size=63, **MOE)


@pytest.mark.parametrize("settings, message", [
    (dict(model_options={"top_k": 2}), "top_k needs experts"),
    (dict(model_options={"experts": 2, "top_k": 3}), r"top_k \(3\) must be at most experts \(2\)"),
    (dict(model_options={"experts": 0}), "experts must be >= 1"),
    (dict(strategy="tensor", workers=2, **{"model_options": {"experts": 4}}), "runs under single, ddp, fsdp, expert"),
    (dict(activation_checkpointing="full", **{"model_options": {"experts": 4}}), "activation_checkpointing"),
])
def test_a_mixture_that_cannot_run_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{"model": "gpt", **settings})

