"""What the benchmark measures: configurations, variants and the plan of each mode.

A *configuration* is one attention problem (B, H, Lq, Lk, D, causal, dtype). A *variant* is
one way of computing it:

``auto``     attnspec with ``chunk_size`` left to the heuristic (what a user gets by default)
``direct``   attnspec with ``chunk_size=0`` (materialised ``Lq x Lk`` scores)
``chunked``  attnspec with ``chunk_size=BLOCK`` (online softmax over query x key blocks)
``native``   attnspec with ``implementation="native"`` (the framework's kernel behind attnspec)
``compiled`` torch only: ``torch.compile(attnspec.scaled_dot_product_attention)`` (inductor),
             the portable path with its elementwise passes fused; compiled in the warm-up
``hand``     NumPy and torch-cpu: the same attention written by hand with the framework's own
             eager operations at their best (``out=``, in-place ``exp``, no checks;
             ``benchmarks/hand.py``): the ceiling of any composition on that framework
``kernel``   the framework's own attention called directly: ``torch.nn.functional.
             scaled_dot_product_attention``, ``jax.nn.dot_product_attention`` under ``jax.jit``
``bare``     NumPy only, tiny shapes: the same computation as a bare NumPy expression
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = [
    "ATTN_VARIANTS",
    "BACKENDS",
    "MODES",
    "Config",
    "Mode",
    "attention_flop",
    "mode",
]

#: Backends the harness knows, in report order (registry names of ``attnspec.backends``).
BACKENDS = ("numpy", "torch-cpu", "jax-cpu", "torch-cuda", "jax-gpu", "cupy")
#: Variants measured for every attention configuration, in report order.
ATTN_VARIANTS = ("auto", "direct", "chunked", "native", "compiled", "hand", "kernel")


@dataclass(frozen=True)
class Config:
    """One attention problem, layout ``(B, H, L, D)`` for q, k and v (no GQA)."""

    B: int
    H: int
    Lq: int
    Lk: int
    D: int
    causal: bool = False
    dtype: str = "float32"
    role: str = "sweep"  # sweep | target | causal | dtype | decode | overhead | memory

    @property
    def label(self) -> str:
        n = f"N={self.Lq}" if self.Lq == self.Lk else f"Lq={self.Lq} Lk={self.Lk}"
        c = " causal" if self.causal else ""
        return f"B={self.B} H={self.H} {n} D={self.D}{c} {self.dtype}"

    @property
    def key(self) -> str:
        """A compact identifier, safe in test ids and file names."""
        c = "-causal" if self.causal else ""
        return f"B{self.B}H{self.H}q{self.Lq}k{self.Lk}D{self.D}{c}-{self.dtype}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**d)


def attention_flop(c: Config) -> float:
    """``4 * B * H * Lq * Lk * D`` (two matmuls), halved for causal."""
    flop = 4.0 * c.B * c.H * c.Lq * c.Lk * c.D
    return flop / 2 if c.causal else flop


@dataclass(frozen=True)
class Mode:
    """The plan of one run mode."""

    name: str
    timed: tuple[Config, ...]  # measured with pytest-benchmark, every variant
    decode: Config
    overhead: Config
    memory_targets: tuple[tuple[Config, tuple[str, ...]], ...]  # NumPy, own subprocess each
    matmul_n: int  # square fp32 matmul for the machine's rate
    memcpy_bytes: int  # buffer size for the machine's memory-copy bandwidth
    # pytest-benchmark: each measurement repeats until max_time, at least min_rounds rounds.
    max_time: float
    min_rounds: int
    extra_dtypes: dict = field(default_factory=dict)
    decode_backends: tuple[str, ...] | None = None  # None: every backend
    # Paired ratios (benchmarks/paired.py): alternating rounds of a variant and its kernel.
    paired_rounds: int = 7
    paired_round_s: float = 0.05


def _sweep(ns, b=1, h=8, d=64, role="sweep", causal=False, dtype="float32"):
    return tuple(Config(b, h, n, n, d, causal, dtype, role) for n in ns)


def _full() -> Mode:
    timed = (
        *_sweep((256, 512, 1024, 2048, 4096)),
        Config(2, 8, 1024, 1024, 64, role="target"),
        *_sweep((512, 1024, 4096), causal=True, role="causal"),
    )
    return Mode(
        name="full",
        timed=timed,
        decode=Config(1, 8, 1, 65536, 128, role="decode"),
        overhead=Config(1, 1, 1, 1, 8, role="overhead"),
        memory_targets=(
            (Config(1, 1, 32768, 32768, 64, role="memory"), ("auto", "chunked")),
            (Config(1, 1, 131072, 131072, 64, role="memory"), ("auto",)),
        ),
        matmul_n=2048,
        memcpy_bytes=256 * 2**20,
        max_time=1.0,
        min_rounds=5,
        # One row per backend in its other common dtype.
        extra_dtypes={"numpy": "float64", "torch-cpu": "bfloat16", "torch-cuda": "bfloat16",
                      "jax-gpu": "bfloat16", "cupy": "float16"},
    )


def _quick() -> Mode:
    return Mode(
        name="quick",
        timed=(
            *_sweep((256, 512)),
            Config(2, 8, 1024, 1024, 64, role="target"),
            *_sweep((512,), causal=True, role="causal"),
        ),
        decode=Config(1, 8, 1, 65536, 128, role="decode"),
        overhead=Config(1, 1, 1, 1, 8, role="overhead"),
        memory_targets=((Config(1, 1, 32768, 32768, 64, role="memory"), ("auto",)),),
        matmul_n=2048,
        memcpy_bytes=256 * 2**20,
        max_time=0.2,
        min_rounds=3,
        decode_backends=("numpy",),  # the decode target is NumPy's
        paired_rounds=5,
        paired_round_s=0.02,
    )


def _tiny() -> Mode:
    # Exercises every code path in seconds; the figures mean nothing.
    return Mode(
        name="tiny",
        timed=(*_sweep((16, 32), h=2, d=16), *_sweep((32,), h=2, d=16, causal=True,
                                                     role="causal")),
        decode=Config(1, 2, 1, 256, 16, role="decode"),
        overhead=Config(1, 1, 1, 1, 8, role="overhead"),
        memory_targets=((Config(1, 1, 512, 512, 16, role="memory"), ("auto", "chunked")),),
        matmul_n=64,
        memcpy_bytes=2**20,
        max_time=0.002,
        min_rounds=1,
        paired_rounds=1,
        paired_round_s=0.0,
    )


MODES = {"full": _full, "quick": _quick, "tiny": _tiny}


def mode(name: str) -> Mode:
    return MODES[name]()
