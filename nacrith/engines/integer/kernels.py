"""Triton kernels for the integer engine on a GPU: what they share, and the key/value store.

The kernels give the integers of the float64 products of groups.py and of forward.py,
in fewer and faster launches: products.py (the matrix products: the weights' int8 blocks,
or limbs for many rows), attention.py (the integer softmax over a window, three passes)
and rows.py (the elementwise stages between them). Here: whether they run (`available`:
Triton on a CUDA device of compute capability 8.0 or later, or its interpreter in the
tests; NACRITH_KERNELS=0 keeps the float64 products), how they launch (`launch`, `ready`:
programmatic dependent launch), the corrected float64 division they share (`_quotient`),
and the store of rows' keys and values into the windows (`store`). tests/test_kernels.py
compares their integers with the float64 products', on a GPU or in Triton's interpreter.
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the float64 products are used instead
    triton = None


# Set when this module was imported: triton.jit reads it as it decorates the kernels.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Programmatic dependent launch (Hopper and later; NACRITH_PDL=0 turns it off): a kernel is started
# while the one before it finishes, and waits (griddepcontrol.wait) for that one's
# completion before it touches memory, so a decoder step's hundreds of small launches
# overlap their start-up. Every kernel here waits first: the one before it had waited for
# its own predecessor, so each sees all earlier work. Timing only: no integer changes.
_PDL_OK = False
if triton is not None and not INTERPRETED:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401 (ready)

        _PDL_OK = "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})
    except ImportError:  # an older Triton: launches as before
        pass
_LAUNCH = {}


def launch(device) -> dict:
    """The launch keywords of every kernel here for tensors on `device`: PDL (constexpr)
    and, where it is on, Triton's launch_pdl."""
    import torch

    if torch.compiler.is_compiling():  # traced into a compiled graph: Inductor cannot analyse the wait
        return dict(PDL=False)
    key = getattr(device, "index", None)
    if key not in _LAUNCH:
        on = _PDL_OK and os.environ.get("NACRITH_PDL", "1") != "0"
        if on:
            on = getattr(device, "type", "") == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)
        _LAUNCH[key] = dict(PDL=True, launch_pdl=True) if on else dict(PDL=False)
    return _LAUNCH[key]


def available(device) -> bool:
    """Whether the kernels run for tensors on `device`: a CUDA device of compute capability
    8.0 or later, or any device when Triton's interpreter made them (tests)."""
    if triton is None or os.environ.get("NACRITH_KERNELS", "1") == "0":
        return False
    if INTERPRETED:
        return True
    if getattr(device, "type", str(device)) != "cuda":
        return False
    import torch

    # int8 dots with int32 sums: Ampere (8.0) and later; older GPUs keep the float64 products
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)


if triton is not None:

    @triton.jit
    def ready(PDL: tl.constexpr):
        """The first step of every kernel here and in rows.py (see `launch`)."""
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def _quotient(num, den, inv):
        """floor(num / den) for den > 0, |num| < 2**62 and |num / den| < 2**50, from inv =
        1 / den in float64: the estimate is within 2**-50 * |num / den| + 1 of the quotient,
        so after the conversion (toward zero) it is off by at most one, which the remainder
        corrects. An int64 division is emulated in some hundred instructions, per element:
        it was most of the values pass (the probabilities, below 2**16), and of rows.py's
        norm and gated unit."""
        q = (num.to(tl.float64) * inv).to(tl.int64)
        r = num - q * den
        return q + (r >= den).to(tl.int64) - (r < 0).to(tl.int64)


if triton is not None:

    @triton.jit
    def _store_kernel(KR, KE, VM, VE, LANE, SLOT, K, KEW, V, VEW, s_r, s_h, e_r, l_r, t_r, C, NKV: tl.constexpr,
                      HD: tl.constexpr, PDL: tl.constexpr):
        """One row's key and value of one kv head into its lane's window at its slot."""
        ready(PDL)
        r, h = tl.program_id(0), tl.program_id(1)
        lane = tl.load(LANE + r * l_r)
        slot = tl.load(SLOT + r * t_r)  # (strides: the decoder's slots are one value expanded)
        dh = tl.arange(0, HD)
        cell = (lane * NKV + h) * C + slot
        tl.store(K + cell * HD + dh, tl.load(KR + r * s_r + h * s_h + dh).to(tl.int16))
        tl.store(V + cell * HD + dh, tl.load(VM + r * s_r + h * s_h + dh).to(tl.int16))
        tl.store(KEW + cell, tl.load(KE + r * e_r + h).to(tl.int32))
        tl.store(VEW + cell, tl.load(VE + r * e_r + h).to(tl.int32))


def store(K, KE, V, VE, lane, slot, kr, ke, vm, ve) -> None:
    """Rows' keys and values (kr, vm [T, kv, hd], exponents ke, ve [T, kv]) into the
    windows K, V [L, kv, C, hd] (int16) and KE, VE [L, kv, C] (int32) at (lane, slot):
    one kernel for what indexed assignment does in eight."""
    T, nkv, hd = kr.shape
    C = K.shape[2]
    if kr.stride() != vm.stride() or ke.stride() != ve.stride() or kr.stride(2) != 1 or ke.stride(1) != 1:
        kr, vm, ke, ve = (x.contiguous() for x in (kr, vm, ke, ve))
    _store_kernel[(T, nkv)](kr, ke, vm, ve, lane, slot, K, KE, V, VE, kr.stride(0), kr.stride(1), ke.stride(0),
                            lane.stride(0), slot.stride(0), C, NKV=nkv, HD=hd, **launch(K.device))
