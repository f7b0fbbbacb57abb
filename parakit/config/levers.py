"""The software levers of a run: numeric precision, gradient compression and how often ranks
synchronise. Written as ``"powersgd:4"``, ``"topk:0.01"``, ``"local-sgd:8"`` or
``"streaming-diloco:8,2"`` by users, parsed here into small frozen values. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parakit.config.choices import Choice, check_int
from parakit.config.layouts import mesh_sizes


class Precision(Choice):
    FP32 = "fp32"  # full fp32 matmuls; TF32 switched off explicitly
    TF32 = "tf32"  # fp32 weights, TF32 tensor-core matmuls and convolutions (GPU)
    FP16 = "fp16"  # autocast to float16, loss scaled by GradScaler (GPU)
    BF16 = "bf16"  # autocast to bfloat16: fp32 weights, bf16 compute
    BF16_PURE = "bf16-pure"  # weights, gradients and optimizer state in bfloat16
    FP8 = "fp8"  # float8 matmuls in the linear layers that qualify (torchao), the rest bf16 (GPU, sm89+)


FP8_MIN_CAPABILITY = (8, 9)
"""The first compute capability with float8 tensor cores (Ada 8.9, Hopper 9.0): torch._scaled_mm,
which torchao's float8 matmuls call, exists from there on."""
FP8_LAYOUTS = ("single", "ddp", "fsdp")
"""Where fp8 runs: torchao's float8 linears compose with DDP's hooks and FSDP2 (whose all-gather
they send in float8); tensor parallelism needs torchao's float8 parallel styles and pipelines
trace the model with torch.export, neither of which parakit wires yet."""
FP8_NEEDS_TORCHAO = "fp8 needs torchao on the engines: pip install 'parakit[fp8]'"
FP8_NEEDS_COMPILE = ("fp8 needs compile=True: torch.compile fuses torchao's float8 scaling and casts, "
                     "without which fp8 is slower than bf16; add compile=True")

# Modes a CPU cannot run as the GPU would; refused rather than silently changed.
GPU_ONLY_PRECISIONS = {
    Precision.TF32: "tf32 is a GPU tensor-core format; on CPU use fp32 or bf16",
    Precision.FP16: "fp16 with loss scaling needs a GPU; on CPU use bf16 or fp32",
    Precision.FP8: "fp8 needs an NVIDIA GPU of compute capability 8.9 or later (Ada, Hopper); on CPU use bf16 "
                   "or fp32",
}


class CompressionKind(Choice):
    NONE = "none"  # plain fp32 all-reduce
    FP16 = "fp16"  # gradients cast to float16 for the all-reduce
    BF16 = "bf16"  # gradients cast to bfloat16 for the all-reduce
    POWERSGD = "powersgd"  # low-rank (rank r) approximation, torch's PowerSGD hook
    TOPK = "topk"  # the largest k of each bucket, values + indices all-gathered
    RANDOMK = "randomk"  # k random entries, the same on every rank, all-reduced


@dataclass(frozen=True)
class Compression:
    """Gradient compression, written ``kind`` or ``kind:value`` (``powersgd:4``, ``topk:0.01``)."""

    kind: CompressionKind = CompressionKind.NONE
    rank: int | None = None
    """PowerSGD's matrix rank r."""
    ratio: float | None = None
    """Share of entries kept by topk and randomk, in (0, 1]."""

    DEFAULT_RANK = 4
    DEFAULT_RATIO = 0.01

    def __post_init__(self):
        # The checks live here, so a Compression built directly is checked as parsed text is.
        kind = CompressionKind.parse(self.kind, "compression")
        object.__setattr__(self, "kind", kind)
        if kind is CompressionKind.POWERSGD:
            rank = self.DEFAULT_RANK if self.rank is None else self.rank
            check_int("powersgd rank", rank, 1)
            object.__setattr__(self, "rank", rank)
        elif kind in (CompressionKind.TOPK, CompressionKind.RANDOMK):
            ratio = self.DEFAULT_RATIO if self.ratio is None else self.ratio
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
                raise ValueError(f"{kind} ratio must be in (0, 1], e.g. {kind}:0.01 (got {ratio})")
            object.__setattr__(self, "ratio", float(ratio))
        if (self.rank is not None and kind is not CompressionKind.POWERSGD) or \
                (self.ratio is not None and kind not in (CompressionKind.TOPK, CompressionKind.RANDOMK)):
            given = self.rank if self.rank is not None else self.ratio
            raise ValueError(f"compression {kind} takes no {'rank' if self.rank is not None else 'ratio'} "
                             f"(got {given})")

    @classmethod
    def parse(cls, value: Any) -> "Compression":
        if isinstance(value, cls):
            return value
        kind, arg, text = _kind_and_value(value, CompressionKind, "compression")
        if kind is CompressionKind.POWERSGD:
            return cls(kind, rank=_number(arg, int, "powersgd rank", "powersgd:4") if arg else None)
        if kind in (CompressionKind.TOPK, CompressionKind.RANDOMK):
            return cls(kind, ratio=_number(arg, float, f"{kind} ratio", f"{kind}:0.01") if arg else None)
        if arg:
            raise ValueError(f"compression {kind} takes no value (got {text!r})")
        return cls(kind)

    def __str__(self) -> str:
        if self.rank is not None:
            return f"{self.kind}:{self.rank}"
        if self.ratio is not None:
            return f"{self.kind}:{self.ratio:g}"
        return self.kind.value


class SyncKind(Choice):
    EVERY_STEP = "every-step"  # gradients averaged every step
    LOCAL_SGD = "local-sgd"  # ranks step alone, parameters averaged every H steps
    ACCUMULATE = "accumulate"  # K micro-steps per optimizer step, gradients synced on the last
    DELAYED = "delayed"  # local gradient at once, the average's correction D steps later
    DILOCO = "diloco"  # H inner AdamW steps alone, then an outer Nesterov step on the averaged change
    STREAMING_DILOCO = "streaming-diloco"  # diloco over F fragments, staggered, overlapped


# The letter each counted kind's value goes by in messages and docs.
SYNC_LETTER = {SyncKind.LOCAL_SGD: "H", SyncKind.ACCUMULATE: "K", SyncKind.DELAYED: "D",
               SyncKind.DILOCO: "H", SyncKind.STREAMING_DILOCO: "H"}


@dataclass(frozen=True)
class Sync:
    """When ranks synchronise, written ``every-step``, ``local-sgd:H``, ``accumulate:K``,
    ``delayed:D``, ``diloco:H`` or ``streaming-diloco:H,F``."""

    kind: SyncKind = SyncKind.EVERY_STEP
    every: int = 1
    """H for local-sgd and the dilocos (steps between syncs), K for accumulate (micro-steps per
    step), D for delayed (steps until a gradient's average is applied)."""
    fragments: int | None = None
    """F for streaming-diloco: parameter fragments, each synced every H steps, H/F apart."""

    def __post_init__(self):
        # The checks live here, so a Sync built directly is checked as parsed text is.
        kind = SyncKind.parse(self.kind, "sync")
        object.__setattr__(self, "kind", kind)
        if kind is SyncKind.EVERY_STEP:
            if self.every != 1 or self.fragments is not None:
                raise ValueError(f"sync every-step takes no value (got every={self.every}, fragments={self.fragments})")
            return
        letter = SYNC_LETTER[kind]
        check_int(f"{kind} {letter}", self.every, 1)
        if kind is not SyncKind.STREAMING_DILOCO:
            if self.fragments is not None:
                raise ValueError(f"sync {kind} takes no fragments (got {self.fragments})")
            return
        example = "streaming-diloco:8,2"
        if self.fragments is None:
            raise ValueError(f"sync {kind} needs H and F, e.g. {example} (H steps between a fragment's "
                             "syncs, F fragments)")
        check_int(f"{kind} F", self.fragments, 1)
        if self.every % self.fragments:
            raise ValueError(f"{kind} H ({self.every}) must be a multiple of F ({self.fragments}): fragments sync "
                             f"H/F steps apart, e.g. {example}")

    @classmethod
    def parse(cls, value: Any) -> "Sync":
        if isinstance(value, cls):
            return value
        kind, arg, text = _kind_and_value(value, SyncKind, "sync")
        if kind is SyncKind.EVERY_STEP:
            if arg:
                raise ValueError(f"sync every-step takes no value (got {text!r})")
            return cls(kind)
        if kind is SyncKind.STREAMING_DILOCO:
            return cls._streaming(arg)
        letter = SYNC_LETTER[kind]
        if not arg:
            raise ValueError(f"sync {kind} needs a count, e.g. {kind}:4 ({letter} >= 1)")
        return cls(kind, _number(arg, int, f"{kind} {letter}", f"{kind}:4"))

    @classmethod
    def _streaming(cls, arg: str) -> "Sync":
        kind, example = SyncKind.STREAMING_DILOCO, "streaming-diloco:8,2"
        every_text, comma, fragments_text = arg.partition(",")
        if not comma or not every_text.strip() or not fragments_text.strip():
            raise ValueError(f"sync {kind} needs H and F, e.g. {example} (H steps between a fragment's "
                             "syncs, F fragments)")
        every = _number(every_text.strip(), int, f"{kind} H", example)
        fragments = _number(fragments_text.strip(), int, f"{kind} F", example)
        return cls(kind, every, fragments)

    def __str__(self) -> str:
        if self.kind is SyncKind.EVERY_STEP:
            return self.kind.value
        if self.fragments is not None:
            return f"{self.kind}:{self.every},{self.fragments}"
        return f"{self.kind}:{self.every}"


def _kind_and_value(value: Any, kinds: type[Choice], what: str) -> tuple[Any, str, str]:
    """``"kind:value"`` -> (kind, value text, whole text); None means the first kind listed."""
    text = next(iter(kinds)).value if value is None else str(value).strip().lower()
    name, _, arg = text.partition(":")
    return kinds.parse(name, what), arg, text


def _number(text: str, kind: type, what: str, example: str):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, e.g. {example} (got {text!r})") from None


def check_cpu_precision(precision: Precision) -> None:
    """Refuse a GPU-only precision for CPU engines, naming the modes that do run there."""
    if precision in GPU_ONLY_PRECISIONS:
        raise ValueError(GPU_ONLY_PRECISIONS[precision])


def check_fp8_settings(layout: str, compile: bool) -> None:
    """What fp8 asks of a run's own settings: a layout it composes with, and compile=True.

    Refused rather than switched on for the user: a run that silently compiles would take a
    minute longer than asked and measure something else than the settings say.

    Args:
        layout: the strategy's (or hybrid layout's) value, e.g. "fsdp" or "fsdp+tensor".
        compile: the run's compile setting.

    Raises:
        ValueError: one line naming what to change.
    """
    if layout not in FP8_LAYOUTS:
        raise ValueError(f"fp8 runs under {', '.join(FP8_LAYOUTS)}, not {layout} (float8 tensor-parallel "
                         "styles and pipeline stages are not wired); use bf16 with it")
    if not compile:
        raise ValueError(FP8_NEEDS_COMPILE)


def check_fp8_capability(capability: tuple[int, int], device_name: str) -> None:
    """Refuse fp8 on a GPU without float8 tensor cores (before compute capability 8.9).

    Args:
        capability: (major, minor), as torch.cuda.get_device_capability or NVML report it.
        device_name: the GPU's name, for the message.

    Raises:
        ValueError: one line naming the GPU, its capability and what to use instead.
    """
    major, minor = capability
    if (major, minor) < FP8_MIN_CAPABILITY:
        need = ".".join(map(str, FP8_MIN_CAPABILITY))
        raise ValueError(f"fp8 needs a GPU of compute capability {need} or later (Ada, Hopper); {device_name} "
                         f"is {major}.{minor}: use bf16")


def default_workers(strategy: str, mesh: Any, engine_count: int) -> int:
    """Workers a run gets when it does not say: 1 for single, the mesh's ranks (or 4) for hybrid,
    else every engine the session has."""
    if strategy == "single":
        return 1
    if strategy == "hybrid":
        sizes = mesh_sizes(mesh)  # a malformed mesh gets 4 here; RunConfig then says what is wrong
        return sizes[0] * sizes[1] if sizes else 4
    return engine_count
