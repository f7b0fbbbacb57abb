"""Every bad setting is refused by the config itself, with one line naming the fix."""

import pytest

from parakit.config.run import RunConfig, Strategy


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
        (dict(precision="fp4"), "precision must be one of fp32"),
        (dict(model="gpt", model_options={"width": 100, "heads": 3}), "divisible by heads"),
        (dict(model="mlp", model_options={"heads": 2}), "no option 'heads'"),
        (dict(loss="ce"), "loss must be a callable"),
        # layouts: each names the fix
        (dict(model="gpt", strategy="pipeline", workers=4), "use fewer workers or a deeper model"),
        (dict(model="mlp", strategy="pipeline", workers=2, microbatches=3), "do not divide the batch of 64"),
        (dict(model="mlp", strategy="pipeline", workers=2, schedule="1f1b", microbatches=1, batch_size=8),
         "at least as many micro-batches as pipeline ranks"),
        (dict(model="gpt", strategy="tensor", workers=3, batch_size=63), "does not divide gpt heads (4)"),
        (dict(model="mlp", strategy="tensor", workers=2, model_options={"width": 33}), "does not divide mlp width"),
        (dict(model="cnn", strategy="tensor", workers=2), "no plan for cnn"),
        (dict(model=model_fn, data=lambda s, n: None, strategy="tensor", workers=2), "pass tp_plan="),
        (dict(model=model_fn, data=lambda s, n: None, strategy="pipeline", workers=2), "needs split points"),
        (dict(model="gpt", strategy="hybrid", workers=4, mesh="3x2"), "has 6 ranks but workers=4"),
        (dict(model="gpt", strategy="hybrid", workers=4, mesh="2by2"), "mesh must look like 2x2"),
        (dict(model="gpt", strategy="hybrid", workers=3), "even number of workers >= 4"),
        (dict(strategy="hybrid", hybrid="tensor+ddp", workers=4), "hybrid must be one of ddp+tensor"),
        (dict(strategy="ddp", workers=2, mesh="1x2"), "mesh applies to strategy hybrid only"),
        (dict(strategy="ddp", workers=2, split=["blocks.1"]), "split applies to pipelines only"),
        (dict(strategy="pipeline", schedule="zigzag", workers=2), "schedule must be one of gpipe, 1f1b"),
        # levers
        (dict(compression="zip"), "compression must be one of none, fp16, bf16, powersgd, topk, randomk"),
        (dict(compression="powersgd:0"), "powersgd rank must be >= 1"),
        (dict(compression="powersgd:x"), "powersgd rank must be a number"),
        (dict(compression="topk:0"), "topk ratio must be in (0, 1]"),
        (dict(compression="randomk:1.5"), "randomk ratio must be in (0, 1]"),
        (dict(compression="fp16:3"), "takes no value"),
        (dict(sync="local-sgd:0"), "local-sgd H must be >= 1"),
        (dict(sync="local-sgd"), "needs a count"),
        (dict(sync="sometimes"), "sync must be one of every-step, local-sgd, accumulate"),
        (dict(sync="accumulate:3", workers=2), "does not divide each rank's batch of 32"),
        (dict(model="mlp", strategy="pipeline", workers=2, compression="powersgd:4"),
         "does not apply to pipeline; it works with ddp"),
        (dict(strategy="fsdp", workers=2, compression="topk:0.01"), "does not apply to fsdp"),
        (dict(strategy="fsdp", workers=2, sync="local-sgd:4"), "applies to ddp, not fsdp"),
        (dict(strategy="ddp", workers=2, sync="local-sgd:4", compression="fp16"), "use compression='none'"),
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


def test_levers_parse_from_text_and_print_back():
    config = RunConfig(strategy="ddp", workers=2, compression="PowerSGD:8", sync="accumulate:4")
    assert (config.compression.kind, config.compression.rank) == ("powersgd", 8)
    assert config.describe()["compression"] == "powersgd:8"
    assert config.describe()["sync"] == "accumulate:4"
    assert str(RunConfig(strategy="ddp", workers=2, sync=" Local-SGD:4").sync) == "local-sgd:4"
    assert str(RunConfig(compression="topk").compression) == "topk:0.01"  # the default ratio


def test_layout_sizes_follow_the_strategy():
    hybrid = RunConfig(model="gpt", strategy="hybrid", workers=4, hybrid="pipeline+ddp", mesh="2x2",
                       model_options={"depth": 4})
    assert hybrid.mesh == (2, 2) and hybrid.data_parallel_size == 2 and hybrid.pipeline_ranks == 2
    assert hybrid.per_rank_batch_size == 32 and hybrid.n_microbatches == 4
    tensor = RunConfig(model="gpt", strategy="tensor", workers=2)
    assert tensor.data_parallel_size == 1 and tensor.per_rank_batch_size == 64  # ranks share the batch
    assert RunConfig(model="gpt", strategy="hybrid", workers=8).mesh == (4, 2)


def test_describe_names_callables_instead_of_serialising_them():
    config = RunConfig(model=model_fn, data=lambda step, n: None)
    described = config.describe()
    assert described["model"] == "model_fn"
    assert described["data"] == "<lambda>"
