"""A short, exact spelling of the engine-profile text in frame headers.

The profile names the engine build and CPU features that decide the logits' bits
(for example "llama.cpp 0.3.36 x86_64 SSE3,SSSE3,AVX,...,REPACK fa"). As plain
text it took 136 bytes of every file: on a 4 KB text that is a seventh of the
output. Packed, each byte below 0x80 is itself (ASCII) and each byte from 0x80 up
stands for WORDS[byte - 0x80]; the writer takes the longest word that fits at each
position. Unpacking gives back the exact text, so profiles are compared as before.

WORDS is part of the format: entries may be appended (a reader that meets a code it
does not have refuses the header), never changed or reordered.
"""

from __future__ import annotations

# llama.cpp's system-info feature names: each with its comma (inside the list) and
# without (the last one). Then the fixed parts of both engines' profiles.
_FEATURES = (
    "SSE3", "SSSE3", "AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", "AVX512",
    "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8", "LLAMAFILE", "OPENMP",
    "REPACK", "NEON", "ARM_FMA", "FP16_VA", "MATMUL_INT8", "DOTPROD", "SVE", "SME",
    "ACCELERATE", "RISCV_V", "VSX", "WASM_SIMD", "KLEIDIAI", "CUDA", "METAL", "VULKAN",
)
WORDS = tuple(w for f in _FEATURES for w in (f + ",", f)) + (
    "llama.cpp ", " x86_64 ", " aarch64 ", " arm64 ", " fa", "torch ", "+cu", "+cpu",
    " cuda ", " cpu ", "NVIDIA ", " float16 graphs", " float32 threads ", "DEFAULT",
    "H100 80GB HBM3", "H200", " sm_", "GeForce RTX ",
    "nacrith-int ",
)
assert len(WORDS) <= 128 and len(set(WORDS)) == len(WORDS)
_BY_LENGTH = sorted(range(len(WORDS)), key=lambda i: (-len(WORDS[i]), i))


def packable(text: str) -> bool:
    return text.isascii()


def pack(text: str) -> bytes:
    if not packable(text):
        raise ValueError("only ASCII profiles are packed")
    out = bytearray()
    i = 0
    while i < len(text):
        for w in _BY_LENGTH:
            if text.startswith(WORDS[w], i):
                out.append(0x80 + w)
                i += len(WORDS[w])
                break
        else:
            out.append(ord(text[i]))
            i += 1
    return bytes(out)


def unpack(data: bytes) -> str:
    parts = []
    for b in data:
        if b < 0x80:
            parts.append(chr(b))
        elif b - 0x80 < len(WORDS):
            parts.append(WORDS[b - 0x80])
        else:
            raise ValueError(f"profile word {b - 0x80} is unknown (made by a newer nacrith?)")
    return "".join(parts)
