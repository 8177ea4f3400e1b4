"""Settings that change the bitstream; all of them are stored in every frame header."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .codec.quantize import LOGIT_BITS, PRECISION
from .errors import CorruptDataError
from .predictors.online import CTX_BIAS_BITS, MAX_SKIP, OnlineConfig
from .reflow import VERSION as REFLOW_VERSION, VERSIONS as REFLOW_VERSIONS

# How tokens are fed to the model, and so which engine and coder a file needs.
# 1: llama.cpp, lanes in lockstep taking chunks as they free up, one token per
#    lane per batch, the KV cache shifted natively; range coder.
# 2: torch, fixed groups of `lanes` chunks started together (gpu/lanes.py); rANS.
# 3: the integer engine (engines/integer): exact integer arithmetic, so chunks are
#    independent of how they are batched; the encoder evaluates whole runs, the
#    decoder any number of lanes; rANS. `lanes` is not stored: it changes nothing.
SCHEDULE_LOCKSTEP = 1
SCHEDULE_GROUPS = 2
SCHEDULE_INT = 3
SCHEDULES = {"llama": SCHEDULE_LOCKSTEP, "torch": SCHEDULE_GROUPS, "int": SCHEDULE_INT}
ENGINES = {v: k for k, v in SCHEDULES.items()}
MAX_CACHE_CELLS = 65536
# Settings added later, and their value in files written before them.
OPTIONAL = {"chunk_tokens": 0, "bias_lr": 0, "ngram": 0, "match_min": 0, "table_bits": 16, "sse_rate": 0,
            "skip": 0, "online": 0, "reflow": 0, "ctx_bias": 0, "balance": 0}
# Version of the online predictors' algorithm (predictors/online.py): any change to
# it that changes the integers they produce takes a new number.
ONLINE_VERSION = 1
# The torch engine's cache: context * lanes cells of ~23 KB in float16 on a GPU.
MAX_GROUP_CELLS = 1 << 21
# The predictors' hashed tables (N-gram orders and match model), int64 slots over
# all lanes: a header may not make a decoder allocate more than 1 GiB for them.
MAX_TABLE_SLOTS = 1 << 27


@dataclass(frozen=True)
class Settings:
    context: int = 2048  # tokens in a lane's window, BOS included
    slide: int = 512  # tokens dropped from the window when it is full
    chunk_bytes: int = 32768  # target chunk size; chunks are coded independently
    frame_bytes: int = 16 << 20  # most input bytes in one frame
    lanes: int = 8  # chunks advanced together, one token each per model call
    schedule: int = SCHEDULE_LOCKSTEP  # which engine (see SCHEDULES)
    # > 0: NC05 frames are tokenized whole and cut every chunk_tokens tokens (equal
    # chunks keep a group's lanes busy to the end); 0: cut by chunk_bytes.
    chunk_tokens: int = 0
    # online predictors (predictors/online.py); 0 = off
    bias_lr: int = 10000  # on by default: -4.2% on alice29 (README, "Online predictors")
    ngram: int = 0
    match_min: int = 0
    table_bits: int = 16
    sse_rate: int = 0  # off: +0.4-0.6% on small files, -0.14% on alice29 (README)
    skip: int = 0
    online: int = 0  # ONLINE_VERSION when any predictor is on (set by validate)
    # reflow.VERSION: the encoder may code hard-wrapped chunks unwrapped (reflow.py); 0: never
    reflow: int = REFLOW_VERSION
    # context bias head (predictors/online.py): on by default, -0.3% on alice29 (README)
    ctx_bias: int = 10000
    # 1: a frame's chunks share its bytes evenly (chunking.py), so the longest chunk, which
    # sets the decoder's time, is as short as the chunk count allows; 0: each chunk takes
    # chunk_bytes and the last the rest (files made before the setting)
    balance: int = 1

    def __post_init__(self) -> None:
        # the version follows from the predictor settings, validated or not (NC06 writes
        # headers from settings it never validated)
        if not self.online and self.predictors.any:
            object.__setattr__(self, "online", ONLINE_VERSION)

    @property
    def predictors(self) -> OnlineConfig:
        return OnlineConfig(self.bias_lr, self.ngram, self.match_min, self.table_bits, self.sse_rate, self.skip,
                            self.ctx_bias)

    def validate(self) -> "Settings":
        self.predictors.validate()
        version = ONLINE_VERSION if self.predictors.any else 0
        if self.online != version:
            if self.online and self.online != ONLINE_VERSION:
                raise ValueError(f"online predictors version {self.online} (this nacrith has {ONLINE_VERSION})")
            object.__setattr__(self, "online", version)
        if self.reflow not in (0, *REFLOW_VERSIONS):
            raise ValueError(f"reflow version {self.reflow} (this nacrith has {', '.join(map(str, REFLOW_VERSIONS))})")
        tables = self.ngram + (1 if self.match_min else 0)
        slots = self.lanes * ((tables << self.table_bits) + (1 << CTX_BIAS_BITS if self.ctx_bias else 0))
        if slots > MAX_TABLE_SLOTS:
            raise ValueError(f"lanes * (hashed tables * 2**table_bits + 2**{CTX_BIAS_BITS} with ctx_bias) "
                             f"must be at most {MAX_TABLE_SLOTS} (8 bytes each)")
        if self.skip and self.schedule != SCHEDULE_LOCKSTEP:
            raise ValueError("the LLM skip runs on the llama.cpp engine only")
        if self.skip and self.slide <= MAX_SKIP:
            raise ValueError(f"with skip on, slide must exceed {MAX_SKIP}")
        if self.balance not in (0, 1):
            raise ValueError("balance must be 0 or 1")
        if self.chunk_tokens and not 16 <= self.chunk_tokens <= 1 << 22:
            raise ValueError("chunk_tokens must be 0 or between 16 and 4194304")
        if not 16 <= self.context <= 32768:
            raise ValueError("context must be between 16 and 32768 tokens")
        if not 1 <= self.slide < self.context - 1:
            raise ValueError("slide must be at least 1 and less than context - 1")
        if not 16 <= self.chunk_bytes <= 1 << 24:
            raise ValueError("chunk_bytes must be between 16 bytes and 16 MiB")
        if not self.chunk_bytes <= self.frame_bytes <= 1 << 28:
            raise ValueError("frame_bytes must be between chunk_bytes and 256 MiB")
        if self.schedule == SCHEDULE_GROUPS:
            if not 1 <= self.lanes <= 8192:
                raise ValueError("lanes must be between 1 and 8192")
            if self.context * self.lanes > MAX_GROUP_CELLS:
                raise ValueError(f"context * lanes must be at most {MAX_GROUP_CELLS} for the torch engine")
            return self
        if self.schedule not in (SCHEDULE_LOCKSTEP, SCHEDULE_INT):
            raise ValueError(f"unknown schedule {self.schedule}")
        if not 1 <= self.lanes <= 256:
            raise ValueError("lanes must be between 1 and 256")
        # The KV cache holds context * lanes cells (~23 KB each for SmolLM2-135M):
        # a header may not make a decoder allocate more than ~1.5 GB for it.
        if self.context * self.lanes > MAX_CACHE_CELLS:
            raise ValueError(f"context * lanes must be at most {MAX_CACHE_CELLS}")
        return self

    @property
    def engine(self) -> str:
        return ENGINES[self.schedule]

    def header_fields(self) -> dict[str, int]:
        out = asdict(self)
        for name, default in OPTIONAL.items():
            if out[name] == default:
                del out[name]  # files without it read the same as before it existed
        if self.schedule == SCHEDULE_INT:
            del out["lanes"]  # how many lanes decode together changes no integer
        out["precision"] = PRECISION
        out["logit_bits"] = LOGIT_BITS
        return out

    @classmethod
    def from_header(cls, values: dict[str, int]) -> "Settings":
        expected = {"precision": PRECISION, "logit_bits": LOGIT_BITS}
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names - set(expected)
        if unknown:
            raise CorruptDataError(
                f"unknown settings {sorted(unknown)} in header (made by a newer nacrith?)"
            )
        for key, want in expected.items():
            if values.get(key) != want:
                raise CorruptDataError(f"unsupported {key} {values.get(key)} (this nacrith uses {want})")
        values = {**OPTIONAL, **values}
        if values.get("schedule") == SCHEDULE_INT:
            if "lanes" in values:
                raise CorruptDataError("integer-engine frames do not store lanes")
            values["lanes"] = INT_DEFAULTS.lanes  # the decoder's own choice; any value decodes
        missing = names - set(values)
        if missing:
            raise CorruptDataError(f"header lacks settings {sorted(missing)}")
        try:
            st = cls(**{n: values[n] for n in names}).validate()
        except ValueError as exc:
            raise CorruptDataError(f"header settings out of range: {exc}") from None
        if st.online != values["online"]:
            raise CorruptDataError("header's online-predictor version does not match its predictor settings")
        return st


# The torch engine's defaults: a short window and many small chunks keep a GPU busy.
# The predictors are off there: their vocabulary-wide integer work per lane and step
# is not measured at 1,024 lanes yet.
TORCH_DEFAULTS = Settings(
    context=512, slide=128, chunk_bytes=8192, chunk_tokens=2048, lanes=1024, schedule=SCHEDULE_GROUPS,
    bias_lr=0, ctx_bias=0,
)

# The integer engine's defaults: those of llama.cpp (its bitstream is as good, see README).
INT_DEFAULTS = Settings(schedule=SCHEDULE_INT)

# The online predictors all off, and the values the ablation turns on (chosen by
# benchmarks/replay.py on alice29.txt; see README "Online predictors").
PREDICTORS_OFF = dict(bias_lr=0, ngram=0, match_min=0, sse_rate=0, skip=0, ctx_bias=0)
PREDICTORS_ON = dict(bias_lr=10000, ngram=4, match_min=6, sse_rate=3000, skip=0, ctx_bias=10000)
