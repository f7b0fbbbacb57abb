"""The one warning a run gives when fsdp or checkpointing found no repeated blocks and took the
whole model as one unit: what it costs, sized from the run's own figures, and the fix."""

from parakit.config.own_model import WHOLE_MODEL
from parakit.config.run import RunConfig
from parakit.records.summary_fields import Summary
from parakit.records.summary_words import one_unit_warning


def own(step, n):
    return None


def test_one_unit_is_said_once_with_its_cost_and_the_fix():
    config = RunConfig(model=lambda: None, data=own, strategy="fsdp", workers=2, activation_checkpointing="full")
    whole = Summary(sharded_units=[WHOLE_MODEL], checkpointed_units=[WHOLE_MODEL], param_bytes=3 * 2**19)
    said = one_unit_warning(whole, config)
    # 1.5 MiB a rank's shard, 2 ranks: 3 MiB gathered at once
    assert said.startswith("no repeated blocks found in the model, so it is one unit: fsdp gathers every weight "
                           "at once (about 3.0 MiB)")
    assert "checkpointing recomputes the whole forward" in said and "blocks='model.layers'" in said
    assert "\n" not in said
    per_layer = Summary(sharded_units=["model.layers.0", "model.layers.1"], checkpointed_units=None)
    assert one_unit_warning(per_layer, config) is None
    assert one_unit_warning(Summary(), config) is None  # a ddp run: neither list
