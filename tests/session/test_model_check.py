"""Settings that name parts of a model of your own (tp_plan, split, blocks), checked against the
model built on the meta device, in the notebook's process: each mistake is one line naming the
fix, before any engine is touched (``check_run`` starts none). Real transformers models, built
from a config with random init: a tiny Llama, and GPT-2 (whose Conv1D no tensor style splits)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from parakit.session import preflight

from refusal_helpers import one_line_naming

transformers = pytest.importorskip("transformers")


def llama(kv_heads: int = 2):
    def build():
        config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=kv_heads,
                                          max_position_embeddings=64)
        return transformers.LlamaForCausalLM(config)
    return build


def gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                                                                n_positions=16, bos_token_id=0,
                                                                eos_token_id=0))


def tokens(step, n):
    x = torch.randint(0, 128, (n, 9), generator=torch.Generator().manual_seed(step))
    return x[:, :-1], x[:, 1:]


class Branchy(nn.Module):
    """Not a Sequential, and its forward branches on a value: export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = self.a(x)
        return self.b(h) if h.sum() > 0 else h


def rows(step, n):
    return torch.randn(n, 8), torch.randint(0, 8, (n,))


OWN = dict(data=tokens, batch_size=8, workers=2)
REFUSED = [
    (dict(model=llama(), strategy="tensor", tp_plan={"layers.*.attn.q": "colwise"}, **OWN),
     "tp_plan key 'layers.*.attn.q' matches no module of the model; the nearest are model.layers.*.self_attn"),
    (dict(model=llama(kv_heads=1), strategy="tensor", tp_plan="auto", **OWN),
     "tp_plan splits model.layers.0.self_attn.k_proj's 1 attention heads over 2 ranks, which does not divide"),
    (dict(model=gpt2, strategy="tensor", tp_plan={"transformer.h.*.attn.c_attn": "colwise"}, **OWN),
     "tp_plan splits transformer.h.0.attn.c_attn, a Conv1D (transformers' Conv1D, GPT-2's, keeps its weight "
     "transposed); colwise and rowwise split nn.Linear and nn.Embedding only"),
    (dict(model=lambda: nn.Linear(8, 8), strategy="tensor", tp_plan="auto", **OWN),
     "tp_plan='auto' takes a transformers model's own plan (config.base_model_tp_plan); Linear has none"),
    (dict(model=llama(), strategy="pipeline", split=["model.layer.1"], **OWN),
     "split names 'model.layer.1', which the model does not have; the nearest are model.layers.1"),
    (dict(model=Branchy, data=rows, strategy="pipeline", split=["b"], batch_size=8, workers=2),
     "pipeline cannot cut Branchy into stages: torch.export cannot capture it (GuardOnDataDependentSymNode"),
    (dict(model=llama(), strategy="fsdp", blocks="model.layer", **OWN),
     "blocks names 'model.layer', which the model does not have; the nearest are model.layers"),
    (dict(model=llama(), strategy="pipeline", split=["model.layers.1"], loss="model", **OWN),
     "loss='model' does not combine with pipelines"),
    (dict(model=llama(), strategy="ddp", sync_batchnorm=True, **OWN), "sync_batchnorm needs GPU engines"),
    (dict(model=llama(), strategy="tensor", tp_plan="auto", sync_batchnorm=True, **OWN),
     "sync_batchnorm applies to ddp and fsdp"),
]


@pytest.fixture(scope="module")
def two_cpu_engines():
    return preflight.engines_here(workers=2, device="cpu")


@pytest.mark.parametrize("settings, fix", REFUSED, ids=range(len(REFUSED)))
def test_a_models_names_are_checked_before_any_engine(two_cpu_engines, settings, fix):
    with pytest.raises(ValueError) as caught:
        preflight.check_run(two_cpu_engines, **settings)
    one_line_naming(str(caught.value), fix)


def test_the_models_own_plan_is_taken_and_what_it_leaves_out_is_said(two_cpu_engines):
    with pytest.warns(UserWarning, match=r"LlamaForCausalLM's own plan also splits lm_head \(colwise_gather_output\), "
                                         r"model.embed_tokens \(embedding_rowwise\)"):
        config = preflight.check_run(two_cpu_engines, model=llama(), strategy="tensor", tp_plan="auto", **OWN)
    assert config.describe()["tp_plan"] == "auto"
    # a wildcard plan as transformers writes it, under the model's own prefix
    preflight.check_run(two_cpu_engines, model=llama(), strategy="tensor", **OWN,
                        tp_plan={"model.layers.*.mlp.up_proj": "colwise", "model.layers.*.mlp.down_proj": "rowwise"})
