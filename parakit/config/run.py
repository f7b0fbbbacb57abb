"""What a run is: a frozen dataclass that checks itself.

This layer is standard library only, so every mistake in a run's settings is found in the
notebook's process, before an engine is started or touched. The strategies' and levers' own
vocabularies live in layouts.py and levers.py; this module checks how they combine.
"""

from __future__ import annotations


from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from parakit.config.choices import Choice, check_int, is_number
from parakit.config.models import MODEL_OPTIONS, Workload, check_model_options
from parakit.config.degrees import ParallelDims
from parakit.config.experts import check_expert_layout
from parakit.config.layouts import (
    STAGES_PER_RANK, Hybrid, Schedule, Strategy, built_in_blocks, check_context, check_microbatches,
    check_pipeline, check_tensor, parse_mesh,
)
from parakit.config.levers import Compression, CompressionKind, Precision, Sync, check_fp8_settings
from parakit.config.memory import Checkpointing, check_memory_levers, describe_memory_levers
from parakit.config.own_model import AUTO_PLAN, check_blocks, check_loss, check_own_model, describe_own_model
from parakit.config.straggler import check_straggler
from parakit.config.sync import check_sync, describe_sync

__all__ = [
    "Checkpointing", "Choice", "Compression", "Device", "Hybrid", "MODEL_OPTIONS", "Precision", "RunConfig",
    "Schedule", "Strategy", "Sync", "Workload",
]


class Device(Choice):
    AUTO = "auto"  # a GPU per engine when this torch and machine have one, else CPU
    CPU = "cpu"
    CUDA = "cuda"


_ALL_KINDS = set(CompressionKind)
_CAST_KINDS = {CompressionKind.NONE, CompressionKind.FP16, CompressionKind.BF16}
# Which gradient compressions each layout can apply: DDP takes communication hooks; FSDP (also
# inside fsdp+tensor) only a reduce dtype; the others have no gradient all-reduce to compress.
COMPRESSION_FOR: dict[Any, set[CompressionKind]] = {
    Strategy.DDP: _ALL_KINDS,
    Strategy.FSDP: _CAST_KINDS,
    Hybrid.FSDP_TENSOR: _CAST_KINDS,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run: what to train, how it is split over ranks, and for how long."""

    model: str | Callable[[], Any] = "mlp"
    """A built-in model name (mlp, cnn, gpt) or a zero-argument callable returning an nn.Module."""
    model_options: Mapping[str, int] = field(default_factory=dict)
    """Sizes of a built-in model, e.g. {"width": 256, "depth": 4} (see MODEL_OPTIONS)."""
    data: Any = None
    """None (the built-in model's own data), a callable (step, global_batch_size) -> (inputs,
    targets) giving the global batch of a step, or a torch Dataset."""
    loss: Callable[[Any, Any], Any] | str | None = None
    """A callable (outputs, targets) -> scalar; cross-entropy of the outputs (their ``.logits``
    where the model returns a ModelOutput, their first element for a tuple) when None; "model"
    for a model that computes its own: called as ``model(inputs, labels=targets)``, its
    ``.loss`` is trained on (not with pipelines)."""
    strategy: Strategy = Strategy.DDP
    """How the work is split across workers: single, ddp, fsdp, pipeline, tensor, hybrid, expert
    (a mixture of experts' experts spread over the workers) or context (each sequence split over
    them, attention round a ring)."""
    workers: int = 1
    """Number of ranks (engines) taking part."""
    precision: Precision = Precision.FP32
    """Numeric format of the training step: fp32, tf32, fp16, bf16, bf16-pure or fp8 (float8
    linear layers through torchao, the rest bf16; needs compile=True and a GPU of compute
    capability 8.9 or later)."""
    compression: Compression = field(default_factory=Compression)
    """Gradient compression: none, fp16, bf16, powersgd:R or topk:K / randomk:K (K a ratio)."""
    error_feedback: bool = True
    """Carry what compression dropped into the next step (topk, randomk; PowerSGD always does)."""
    sync: Sync = field(default_factory=Sync)
    """every-step, local-sgd:H (average parameters every H steps), accumulate:K, delayed:D,
    diloco:H or streaming-diloco:H,F (config/sync.py says what each does)."""
    outer_lr: float | None = None
    """diloco's outer learning rate (None: DiLoCo's 0.7)."""
    outer_momentum: float | None = None
    """diloco's outer Nesterov momentum, in [0, 1) (None: DiLoCo's 0.9)."""
    schedule: Schedule = Schedule.GPIPE
    """Pipeline schedule: gpipe, 1f1b or interleaved (two stages per rank)."""
    microbatches: int | None = None
    """Pipeline micro-batches per step (default: twice the pipeline ranks)."""
    split: tuple[str, ...] | None = None
    """Pipeline split points for a model of your own: names of the modules that begin a stage."""
    tp_plan: Mapping[str, str] | str | None = None
    """Tensor-parallel plan for a model of your own: module name -> colwise or rowwise, a ``*``
    matching any one name (``"layers.*.mlp.up_proj"``); or "auto": a transformers model's own
    plan (``base_model_tp_plan``), its styles parakit has (colwise, rowwise) kept."""
    blocks: str | tuple[Any, ...] | None = None
    """A model's repeated blocks, where parakit should not look for them itself: a module name
    ("model.layers": a ModuleList or Sequential stands for its children), a class, or a list of
    names or classes. fsdp shards each on its own; checkpointing and compile take each alone.
    None: found (engine/blocks.py: transformers' ``_no_split_modules``, else a list of blocks)."""
    sync_batchnorm: bool = False
    """ddp and fsdp on GPUs: BatchNorm layers normalise over the global batch (torch's
    SyncBatchNorm, an all-reduce per layer per forward and backward) instead of each rank's
    slice, so their statistics are single's. Off, each rank uses its own slice's."""
    hybrid: Hybrid = Hybrid.FSDP_TENSOR
    """Layout of strategy hybrid: ddp+tensor, fsdp+tensor or pipeline+ddp."""
    mesh: tuple[int, int] | str | None = None
    """Hybrid mesh, outer x inner, e.g. "2x2" (default: workers/2 x 2)."""
    steps: int = 20
    """Optimizer steps to run, warm-up included."""
    warmup_steps: int = 2
    """First steps recorded but left out of the summary (allocator, caches, lazy init)."""
    batch_size: int = 64
    """Global batch size: the same at every world size, split evenly over data-parallel ranks."""
    lr: float = 1e-3
    """AdamW learning rate."""
    seed: int = 0
    """Seed for weights and data; the same seed gives the same run at any world size."""
    profile_every: int | None = None
    """Which steps the PyTorch profiler records, for the time breakdown (compute, communication,
    exposed communication, idle). None: one window of the run's last 3 steps (after the
    warm-up), read after the measured steps' clock stops, which costs a small run ~1% of its
    wall time; N: every Nth step after the warm-up (each recorded step costs milliseconds
    outside it); 0: none."""
    bucket_mb: float | None = None
    """DDP gradient bucket size in MB (torch's default, 25, when None): smaller buckets start
    communicating earlier in backward, so more of it hides behind compute."""
    compile: bool = False
    """torch.compile the model, each repeated block on its own, after tensor parallelism and
    activation checkpointing and before fsdp/ddp wrap it (engine/compose.py says why): fewer,
    fused kernels on a GPU. The first step compiles (seconds to a minute), so it must be
    a warm-up step; not with pipelines (their stages run what torch.export traced, uncompiled)."""
    stop_on_divergence: bool = True
    """End the run on every rank soon after a loss becomes NaN or infinite (within 2 x 8 steps:
    the ranks look every 8 steps). Either way the run's warnings name the first such step and
    ``summary["diverged_at_step"]`` holds it; the status stays ``ok``."""
    trace: bool = False
    """Write each rank's recorded steps as a Chrome-trace JSON file beside the run file (opens
    in Perfetto, chrome://tracing and Holistic Trace Analysis); see ``RunResult.traces``."""
    straggler: str | None = None
    """"RANK:FACTOR", e.g. "1:2": a lesson's lever that makes that rank's forward and backward
    FACTOR times as slow with real extra arithmetic, so the others wait for it (config/straggler.py)."""
    activation_checkpointing: Checkpointing = Checkpointing.NONE
    """none, full (recompute each repeated block's forward in backward) or selective (keep the
    matmuls' outputs, recompute the rest): activation memory traded for compute (memory.py)."""
    zero: int | None = None
    """ZeRO stage: 1 shards ddp's optimizer state; 2 and 3 are fsdp keeping its gathered
    parameters for backward (2) or freeing them after forward (3, fsdp's default)."""
    memory_limit: int | None = None
    """Bytes a rank may hold: on a GPU an allocation past it fails as an out-of-memory would
    (torch.cuda.set_per_process_memory_fraction); ``Session.fit`` sets it. Not enforced on CPU."""
    memory_snapshot: bool = False
    """On a GPU, write a torch.cuda.memory snapshot of the run beside its file (it opens in
    pytorch.org/memory_viz); on a CPU the run says why there is none."""
    live: bool = True
    """Stream progress (step, loss, power, time breakdown) from rank 0 to the notebook every
    0.2 s while the run goes; False sends only the step count every 5 s, which the hang watch
    needs, and nothing a live view could draw."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise user input to enums and values once, here
        set_(self, "strategy", Strategy.parse(self.strategy, "strategy"))
        set_(self, "precision", Precision.parse(self.precision, "precision"))
        set_(self, "compression", Compression.parse(self.compression))
        set_(self, "sync", Sync.parse(self.sync))
        set_(self, "schedule", Schedule.parse(self.schedule, "schedule"))
        set_(self, "hybrid", Hybrid.parse(self.hybrid, "hybrid"))
        set_(self, "activation_checkpointing",
             Checkpointing.parse(self.activation_checkpointing, "activation_checkpointing"))
        if isinstance(self.split, str):
            set_(self, "split", (self.split,))
        elif self.split is not None:
            if not isinstance(self.split, (list, tuple)) or not all(isinstance(n, str) for n in self.split):
                raise ValueError(f"split must be module names, e.g. ['layers.2'] (got {self.split!r})")
            set_(self, "split", tuple(self.split))
        set_(self, "blocks", check_blocks(self.blocks))
        for name in ("model_options", "tp_plan"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping) and not (name == "tp_plan" and value == AUTO_PLAN):
                raise ValueError(f"{name} must be a dict, e.g. {MAPPING_EXAMPLES[name]} (got {value!r})")
        self._check_model()
        self._check_numbers()
        if self.strategy is Strategy.HYBRID:
            set_(self, "mesh", parse_mesh(self.mesh, self.workers, self.hybrid))
        elif self.mesh is not None:
            raise ValueError(f"mesh applies to strategy hybrid only (strategy is {self.strategy})")
        self._check_layout()
        self._check_levers()
        set_(self, "straggler", check_straggler(self.straggler, self.workers, self.strategy is Strategy.SINGLE))
        check_memory_levers(self)
        check_expert_layout(self)
        check_own_model(self)

    # -- checks, in the order a user would want to hear about them ---------------------
    def _check_model(self) -> None:
        if isinstance(self.model, str):
            object.__setattr__(self, "model", Workload.parse(self.model, "model").value)
            check_model_options(Workload(self.model), self.model_options)
        elif not callable(self.model):
            raise ValueError(
                "model must be mlp, cnn, gpt or a zero-argument callable returning an nn.Module"
            )
        elif self.model_options:
            raise ValueError("model_options apply to built-in models only; size your own model")
        if self.data is None and not isinstance(self.model, str):
            raise ValueError("a model of your own needs data=: a callable or a Dataset")
        if self.data is not None and not callable(self.data) and not _is_dataset(self.data):
            raise ValueError("data must be a callable (step, global_batch_size) -> (inputs, targets) "
                             f"or a torch Dataset (got {type(self.data).__name__})")
        check_loss(self.loss)

    def _check_numbers(self) -> None:
        check_int("workers", self.workers, 1)
        check_int("steps", self.steps, 1)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.profile_every is not None:
            check_int("profile_every", self.profile_every, 0)
        if self.bucket_mb is not None and not is_number(self.bucket_mb, above=0):
            raise ValueError(f"bucket_mb must be a positive number of MB (got {self.bucket_mb!r})")
        if self.microbatches is not None:
            check_int("microbatches", self.microbatches, 1)
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})"
            )
        if not is_number(self.lr, above=0):
            raise ValueError(f"lr must be a positive number (got {self.lr!r})")
        for name in ("error_feedback", "compile", "live", "stop_on_divergence", "trace"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False (got {getattr(self, name)!r})")

    def _check_layout(self) -> None:
        s = self.strategy
        if self.bucket_mb is not None and s is not Strategy.DDP:
            raise ValueError(f"bucket_mb sizes DDP's gradient buckets; strategy {s} has none (use strategy ddp)")
        if s is Strategy.SINGLE and self.workers != 1:
            raise ValueError(
                f"strategy single runs on 1 worker (got workers={self.workers}); "
                "use strategy ddp for more"
            )
        dp = self.data_parallel_size
        if self.batch_size % dp:
            raise ValueError(
                f"batch_size {self.batch_size} does not divide over {dp} data-parallel ranks; "
                f"use a multiple of {dp}"
            )
        if self.uses_pipeline:
            stages = self.pipeline_ranks * STAGES_PER_RANK[self.schedule]
            blocks = built_in_blocks(self.model, self.options) if isinstance(self.model, str) else None
            check_pipeline(stages, blocks, self.split, self.model if isinstance(self.model, str) else "")
            check_microbatches(self.n_microbatches, self.per_rank_batch_size, self.pipeline_ranks, self.schedule)
        elif self.split is not None:
            raise ValueError(f"split applies to pipelines only (strategy is {s})")
        elif self.microbatches is not None:
            raise ValueError(f"microbatches apply to pipelines only (strategy is {s})")
        if self.dims.tensor_enabled or s is Strategy.TENSOR:
            check_tensor(self.model, self.options, self.tensor_degree, self.tp_plan)
        elif self.tp_plan is not None:
            raise ValueError(f"tp_plan applies to tensor parallelism only (strategy is {s})")
        if s is Strategy.CONTEXT:
            check_context(self.model, self.options, self.workers, self.compile)

    def _check_levers(self) -> None:
        layout = self.hybrid if self.strategy is Strategy.HYBRID else self.strategy
        kind = self.compression.kind
        if kind is not CompressionKind.NONE and kind not in COMPRESSION_FOR.get(layout, set()):
            takes = [str(k) for k, kinds in COMPRESSION_FOR.items() if kind in kinds]
            raise ValueError(
                f"compression {self.compression} does not apply to {layout}; it works with "
                f"{', '.join(takes)} (use compression='none' here)"
            )
        check_sync(self)
        if self.precision is Precision.FP8:
            check_fp8_settings(layout.value, self.compile)
        if self.precision is Precision.FP16 and self.uses_pipeline:
            raise ValueError(
                "fp16 needs loss scaling, which parakit does not do across pipeline stages; "
                "use bf16 (no scaling needed) with pipelines"
            )
        if self.compile and self.uses_pipeline:
            raise ValueError("compile does not combine with pipeline yet (its stages run the graph "
                             "torch.export traces, not the compiled blocks); drop compile")
        if self.compile and self.warmup_steps == 0:
            raise ValueError("compile needs warmup_steps >= 1: the first step compiles the model, "
                             "and timing it would count the compile as training")

    # -- derived sizes ------------------------------------------------------------------
    @property
    def options(self) -> dict[str, int]:
        """A built-in model's options with defaults filled in ({} for a model of your own)."""
        if not isinstance(self.model, str):
            return {}
        return {**MODEL_OPTIONS[Workload(self.model)], **self.model_options}

    @property
    def uses_pipeline(self) -> bool:
        return self.strategy is Strategy.PIPELINE or (
            self.strategy is Strategy.HYBRID and self.hybrid is Hybrid.PIPELINE_DDP
        )

    @property
    def dims(self) -> ParallelDims:
        """The run's parallel degrees and mesh (config/degrees.py): every size reads from it."""
        return ParallelDims.of(self.strategy, self.workers, self.hybrid, self.mesh)

    @property
    def data_parallel_size(self) -> int:
        """Ranks that each take a different slice of the global batch."""
        return self.dims.data

    @property
    def tensor_degree(self) -> int:
        return self.dims.tensor

    @property
    def pipeline_ranks(self) -> int:
        return self.dims.pipeline

    @property
    def n_microbatches(self) -> int:
        return self.microbatches if self.microbatches is not None else 2 * self.pipeline_ranks

    @property
    def per_rank_batch_size(self) -> int:
        """Rows of the global batch each data-parallel rank (or pipeline, or TP group) takes."""
        return self.batch_size // self.data_parallel_size

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view; callables are named, not serialised."""
        def name(obj: Any) -> Any:
            if obj is None or isinstance(obj, (str, int, float)):
                return obj
            return getattr(obj, "__name__", type(obj).__name__)

        described = {
            "model": name(self.model),
            "model_options": dict(self.model_options),
            "data": name(self.data),
            "loss": name(self.loss),
            "strategy": self.strategy.value,
            "workers": self.workers,
            "precision": self.precision.value,
            "compression": str(self.compression),
            "error_feedback": self.error_feedback,
            "sync": str(self.sync),
            "steps": self.steps,
            "warmup_steps": self.warmup_steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "profile_every": self.profile_every,
        }
        if self.bucket_mb is not None:
            described["bucket_mb"] = self.bucket_mb
        if self.compile:  # only where set, so earlier runs' records compare equal
            described["compile"] = True
        if not self.live:
            described["live"] = False
        if not self.stop_on_divergence:
            described["stop_on_divergence"] = False
        if self.trace:
            described["trace"] = True
        if self.straggler is not None:
            described["straggler"] = self.straggler
        described.update(describe_memory_levers(self))
        described.update(describe_sync(self))
        if self.uses_pipeline:
            described.update(schedule=self.schedule.value, microbatches=self.n_microbatches,
                             split=list(self.split) if self.split else None)
        if self.strategy is Strategy.HYBRID:
            described.update(hybrid=self.hybrid.value, mesh=f"{self.mesh[0]}x{self.mesh[1]}")
        if self.tp_plan is not None:
            described["tp_plan"] = self.tp_plan if self.tp_plan == AUTO_PLAN else dict(self.tp_plan)
        described.update(describe_own_model(self))
        return described


MAPPING_EXAMPLES = {"model_options": "{'width': 256}", "tp_plan": "{'fc1': 'colwise', 'fc2': 'rowwise'} or 'auto'"}


def _is_dataset(data: Any) -> bool:
    """A torch Dataset, recognised without importing torch (config is stdlib only)."""
    return any(c.__name__ == "Dataset" and c.__module__.startswith("torch.utils.data")
               for c in type(data).__mro__)
