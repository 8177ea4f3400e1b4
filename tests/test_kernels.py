"""The Triton kernels (engines/integer/kernels.py) give the integers of the float64 products.

On a GPU (NACRITH_TEST_DEVICE=cuda) they run as they do for users; elsewhere in Triton's
interpreter, which runs the same kernel code with numpy: this file runs itself again in a
process with TRITON_INTERPRET=1 (Triton reads it as it compiles the kernels at import, so
it cannot be set for this process without changing every later test's engine). Without
Triton the engine keeps its float64 products and these tests are skipped. Inputs are
random at the bounds the engine guarantees (int16 activations, mantissas of 12 bits
rotated, probabilities up to 2**16), with the extremes put in on purpose.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from nacrith.codec.quantize import EXP2_TABLE  # noqa: E402
from nacrith.engines.integer import groups, kernels, spec, weights  # noqa: E402
from nacrith.xp import TorchOps  # noqa: E402

DEVICE = os.environ.get("NACRITH_TEST_DEVICE", "cpu")
# the kernel tests run here on a GPU or when the kernels were made by the interpreter;
# otherwise test_in_the_interpreter runs them in a process of their own
HERE = DEVICE != "cpu" or kernels.INTERPRETED
here = pytest.mark.skipif(not HERE, reason="run by test_in_the_interpreter, in a process with TRITON_INTERPRET=1")


@pytest.mark.skipif(HERE, reason="the kernels run in this process")
def test_in_the_interpreter():
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1", NACRITH_TEST_DEVICE="cpu")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("15 passed, 1 skipped"), last  # 8 products, 6 attentions, 1; this one skipped


def _exact_product(a: np.ndarray, bw) -> np.ndarray:
    return (a.astype(object) @ bw.dense().T.astype(object)).astype(np.int64)  # Python integers


@here
@pytest.mark.parametrize("rows", [1, 3, 17, 70])
@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
def test_block_linear_is_the_exact_product(rows, kind):
    rng = np.random.default_rng(rows)
    n, k = 200, 256  # n not a multiple of the tile: masked columns; 8 blocks: cut for few rows
    if kind == "q4_1":  # nibbles and a negative offset, as the model's weights
        q = rng.integers(0, 16, (n, k))
        d = rng.integers(1, 1 << 17, (n, k // 32))
        m = -8 * d + rng.integers(-999, 999, (n, k // 32))
    else:
        q = rng.integers(-127, 128, (n, k))
        d = rng.integers(1, 1 << 16, (n, k // 32))
        m = np.zeros_like(d)
    q[0], q[1] = q.max(), q.min()
    bw = weights.BlockWeight(q.astype(np.int8), d, m)
    a = rng.integers(-32767, 32768, (rows, k))
    a[0, :] = 32767  # the extremes of int16 activations: the halves' edge cases
    if rows > 1:
        a[1, :] = -32767
    y = kernels.block_linear(torch.from_numpy(a).to(DEVICE), kernels.BlockMatrix.of(bw, DEVICE))
    assert y.dtype == torch.int64
    assert np.array_equal(y.cpu().numpy(), _exact_product(a, bw))


@here
@pytest.mark.parametrize("R,s0,shift", [(1, 0, -24), (1, 37, -24), (1, 199, -30), (5, 90, -20), (40, 3, -26),
                                        (30, 150, -8)])
def test_attention_is_the_float64_attention(R, s0, shift):
    """groups.attention on int16 windows (the kernels) and on float64 ones. Rows at slots s0 .. s0 + R - 1 of every lane, against windows of 200 slots whose
    later slots hold stale values (masked); exponents chosen around `shift` so the scores
    range from flat to saturated (shift -8: clamped at SCORE_CAP)."""
    rng = np.random.default_rng(R * 1000 + s0)
    L, nkv, g, hd, C = 2, 3, 3, 64, 200
    nh, T = nkv * g, L * R
    dev = torch.device(DEVICE)
    lim = 2897  # rotated 12-bit mantissas reach sqrt(2) * 2**11
    t = lambda x, dt: torch.from_numpy(x).to(dt).to(dev)  # noqa: E731
    K = t(rng.integers(-lim, lim + 1, (L, nkv, C, hd)), torch.int16)
    V = t(rng.integers(-2047, 2048, (L, nkv, C, hd)), torch.int16)
    V[0, 0, : s0 + R, 0] = 2047  # one value column at its bound
    KE = t(rng.integers(shift // 2 - 3, shift // 2 + 3, (L, nkv, C)), torch.int32)
    VE = t(rng.integers(-12, -4, (L, nkv, C)), torch.int32)
    qr = t(rng.integers(-lim, lim + 1, (T, nh, hd)), torch.int64)
    qe = t(rng.integers(shift // 2 - 3, shift // 2 + 3, (T, nh)), torch.int64)
    slot = (torch.arange(R).repeat(L) + s0).to(dev)
    table = torch.as_tensor(EXP2_TABLE, device=dev)
    score = spec.score_scale(hd)
    o, slots = TorchOps(dev), torch.arange(C, device=dev)
    out, oe = groups.attention(o, qr, qe, K, V, KE, VE, slots, slot, score, table)  # int16 windows: the kernels
    want, want_e = groups.attention(o, qr, qe, K.double(), V.double(), KE, VE, slots, slot, score, table)
    assert torch.equal(out, want) and torch.equal(oe, want_e)
    assert want.abs().max() > 0


def test_the_kernels_are_used_only_where_they_run(monkeypatch):
    cuda = torch.device("cuda")
    modern = torch.cuda.is_available() and torch.cuda.get_device_capability(cuda) >= (8, 0)
    monkeypatch.delenv("NACRITH_KERNELS", raising=False)
    assert kernels.available(cuda) == (kernels.INTERPRETED or modern)
    assert kernels.available(torch.device("cpu")) == kernels.INTERPRETED
    monkeypatch.setenv("NACRITH_KERNELS", "0")
    assert not kernels.available(cuda) and not kernels.available(torch.device("cpu"))
