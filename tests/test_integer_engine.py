"""The integer engine: exact weights, exact primitives, and the same integer logits from
every backend, thread count, instruction set, lane count and evaluation schedule.

NACRITH_TEST_DEVICE=cuda runs the torch comparisons on a GPU (by hand, on the GPU machine).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from nacrith.engines.integer import native, spec, weights
from nacrith.engines.integer.lanes import Lanes
from nacrith.engines.integer.ops import NumpyOps, TorchOps, bitlen, isqrt, quantise, shift

DEVICE = os.environ.get("NACRITH_TEST_DEVICE", "cpu")
CTX, SLIDE = 32, 8  # 70 inputs slide the window 5 times


@pytest.fixture(scope="module")
def w(model_path):
    return weights.load(model_path)


@pytest.fixture(scope="module")
def tokens(model_path):
    from nacrith.engines.llama_cpp.model import LlamaModel

    lm = LlamaModel(str(model_path), n_ctx=16, vocab_only=True)
    text = open(os.path.join(os.path.dirname(__file__), "data", "golden.txt"), "rb").read()
    return [lm.bos] + lm.tokenize(text)[:69]


def run(L: Lanes, lane: int, toks, step: int | None = None) -> np.ndarray:
    """Logits of every input of `toks` on `lane`, in runs of up to `step` (None: as many
    as the window takes), sliding the window as needed."""
    out, i = [], 0
    while i < len(toks):
        L.make_room(lane)
        k = min(L.room(lane), len(toks) - i, step or len(toks))
        z = L.run([lane], [toks[i : i + k]])
        out.append(z if isinstance(z, np.ndarray) else z.cpu().numpy())
        i += k
    return np.concatenate(out)


@pytest.fixture(scope="module")
def reference_logits(w, tokens):
    """The numpy reference over the whole chunk: the integers every other way must give."""
    from nacrith.engines.integer.reference import Reference

    L = Lanes(w, Reference(w, 1, CTX), 1, CTX, SLIDE)
    z = run(L, 0, tokens)
    assert L.first[0] > 1 + SLIDE  # the window slid at least twice
    return z


# -- weights and tables ---------------------------------------------------------------------


def test_weights_are_the_gguf_values_exactly(w, model_path):
    import gguf

    from nacrith.engines.integer.gguf_file import GGUFFile

    f = GGUFFile(str(model_path))
    for name, bw, rows in [("blk.0.attn_q.weight", w.layers[0].wqkv, 576), ("blk.29.ffn_down.weight", w.layers[29].w2, 576),
                           ("token_embd.weight", w.embed, 49152)]:
        t = f.tensors[name]
        ref = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType[t.type_name])
        mine = bw.dense(slice(0, rows)) / float(1 << spec.WEIGHT_UNIT)
        assert np.array_equal(mine, ref.astype(np.float64)), name


def test_float_weights_are_requantised_to_8_bit_blocks():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((3, 64)) * 0.05
    bw = weights._requantise(np.rint(f * (1 << 24)).astype(np.int64))
    assert bw.q.dtype == np.int8 and np.abs(bw.q).max() <= 127
    err = np.abs(bw.dense() / 2.0**24 - f).max()
    assert 0 < err <= np.abs(f).max() / 127


def test_rope_tables_are_cos_and_sin(w):
    i = np.arange(w.head_dim // 2)
    freq = 100000.0 ** (-2.0 * i / w.head_dim)
    ang = np.outer(2.0 ** np.arange(spec.POS_BITS), freq)
    assert np.abs(w.rope[..., 0] / 2.0**30 - np.cos(ang)).max() < 2e-9
    assert np.abs(w.rope[..., 1] / 2.0**30 - np.sin(ang)).max() < 2e-9


def test_table_digest_is_pinned(w):
    # changes only with a new arithmetic VERSION (docs/integer-engine.md)
    assert spec.VERSION == 1
    assert w.digest[:16] == "0516d4a04459479c"


def test_oversized_weights_are_refused(w):
    import dataclasses

    big = weights.BlockWeight(w.layers[0].w2.q.copy(), w.layers[0].w2.d * (1 << 12), w.layers[0].w2.m.copy())
    broken = dataclasses.replace(w, layers=[dataclasses.replace(w.layers[0], w2=big)] + w.layers[1:])
    with pytest.raises(weights.UnsupportedInputError, match="too large"):
        weights._check(broken)


# -- primitives: the same integers in numpy and torch -----------------------------------------


def test_primitives_are_exact_and_agree_between_numpy_and_torch():
    import torch

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.integers(-(1 << 62), 1 << 62, 500), rng.integers(-1000, 1000, 500),
                        np.array([0, 1, -1, (1 << 62) - 1, 1 << 53, (1 << 53) + 1, (1 << 53) - 1])])
    s = rng.integers(-10, 70, x.shape)
    s[np.abs(x) > 1 << 50] = np.maximum(s[np.abs(x) > 1 << 50], 0)  # no overflowing left shifts
    n, t = NumpyOps(), TorchOps(DEVICE)
    tx, ts = torch.as_tensor(x, device=DEVICE), torch.as_tensor(s, device=DEVICE)
    bl = bitlen(n, np.abs(x))
    assert bl.tolist() == [int(v).bit_length() for v in np.abs(x)]
    assert bitlen(t, tx.abs()).cpu().tolist() == bl.tolist()
    sh = shift(n, x, s)
    want = [(int(a) + (1 << (min(int(b), 62) - 1))) >> min(int(b), 62) if b > 0 else int(a) << int(-b)
            for a, b in zip(x, s)]
    assert sh.tolist() == want
    assert shift(t, tx, ts).cpu().tolist() == want
    pos = np.abs(x) >> 1
    r = isqrt(n, pos)
    assert r.tolist() == [math.isqrt(int(v)) for v in pos]
    assert isqrt(t, torch.as_tensor(pos, device=DEVICE)).cpu().tolist() == r.tolist()
    m, e = quantise(n, x[:1001].reshape(-1, 7), 12, (-1,))
    mt, et = quantise(t, tx[:1001].reshape(-1, 7), 12, (-1,))
    assert np.abs(m).max() < 2048 and np.array_equal(mt.cpu().numpy(), m) and np.array_equal(et.cpu().numpy(), e)


# -- the same logits every way ------------------------------------------------------------------


needs_native = pytest.mark.skipif(native.library() is None, reason="the C kernels are not built")


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("simd", [True, False])
def test_native_kernels_give_the_reference_integers(w, tokens, reference_logits, threads, simd):
    from nacrith.engines.integer.native import Native

    try:
        native.set_simd(simd)
        L = Lanes(w, Native(w, 2, CTX, threads), 2, CTX, SLIDE)
        assert np.array_equal(run(L, 0, tokens), reference_logits)
        assert np.array_equal(run(L, 1, tokens, step=1), reference_logits)  # token by token
        L.reset(0)  # lane 0 again, over its old cache contents
        assert np.array_equal(run(L, 0, tokens, step=5), reference_logits)
    finally:
        native.set_simd(True)


def test_torch_gives_the_reference_integers(w, tokens, reference_logits):
    import torch

    from nacrith.engines.integer.torch_backend import TorchBackend

    before = torch.get_num_threads()
    try:
        be = TorchBackend(w, 2, CTX, DEVICE)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            L = Lanes(w, be, 2, CTX, SLIDE)
            assert np.array_equal(run(L, 0, tokens), reference_logits)
        assert np.array_equal(run(L, 1, tokens[:40], step=1), reference_logits[:40])
    finally:
        torch.set_num_threads(before)


@needs_native
def test_lanes_in_lockstep_give_each_lane_its_own_integers(w, tokens, reference_logits):
    from nacrith.engines.integer.native import Native

    L = Lanes(w, Native(w, 3, CTX), 3, CTX, SLIDE)
    # three lanes, started at different times, advance together one input each
    starts = [0, 5, 11]
    got = [[] for _ in starts]
    for step in range(len(tokens) + max(starts)):
        lanes = [j for j, s in enumerate(starts) if 0 <= step - s < len(tokens)]
        for j in lanes:
            if step == starts[j]:
                L.reset(j)
            L.make_room(j)
        if lanes:
            z = L.run(lanes, [[tokens[step - starts[j]]] for j in lanes])
            for r, j in enumerate(lanes):
                got[j].append(z[r])
    for g in got:
        assert np.array_equal(np.array(g), reference_logits)


# -- the engine: lanes, runs and predictors change no byte ------------------------------------


@pytest.fixture(scope="module")
def chunks(tokens):
    """Ten chunks of 1 to 69 tokens (some slide the window)."""
    body = tokens[1:]
    cuts = [1, 3, 9, 20, 33, 40, 52, 60, 64, 69]
    return [body[: c] for c in cuts]


@needs_native
@pytest.mark.parametrize("predictors", [dict(bias_lr=0, ctx_bias=0), dict(bias_lr=10000, ctx_bias=10000),
                                        dict(bias_lr=10000, ctx_bias=10000, ngram=3, match_min=4, sse_rate=3000)])
def test_lane_count_and_run_length_change_no_byte(model_path, tokens, chunks, predictors):
    from nacrith.api import settings_for
    from nacrith.engines.integer.coding import IntEngine

    st = settings_for("int", context=CTX, slide=SLIDE, **predictors)
    bos = tokens[0]
    first = None
    for lanes, block in ((1, 64), (7, 1), (64, 5)):
        eng = IntEngine(str(model_path), lanes=lanes, block=block)
        payloads, bits = eng.encode(st, bos, chunks)
        if first is None:
            first = payloads
        assert payloads == first, (lanes, block)
        assert all(b > 0 for b in bits)
    # the decoder at every lane count; with the slow Python predictors (N-gram, match, SSE)
    # at one, the others being covered above
    for lanes in (7,) if predictors.get("ngram") else (1, 7, 64):
        eng = IntEngine(str(model_path), lanes=lanes)
        assert eng.decode(st, bos, [len(c) for c in chunks], first) == chunks


# -- golden files: made once, decoded and reproduced byte for byte on every machine ------------


def _golden(name: str) -> bytes:
    from pathlib import Path

    return (Path(__file__).parent / "data" / name).read_bytes()


def test_golden_files_decode_on_any_machine(model_path):
    import nacrith

    from make_golden import golden06_input

    assert nacrith.decompress(_golden("golden-int.nc"), model=model_path) == _golden("golden.txt")
    assert nacrith.decompress(_golden("golden-int06.nc"), model=model_path) == golden06_input()


@pytest.mark.parametrize("backend", ["native", "numpy", "torch"])
def test_golden_files_are_reproduced_byte_for_byte(model_path, backend):
    from make_golden import INT, golden06_input

    from nacrith.api import load_model, settings_for
    from nacrith.formats import nc05, nc06

    if backend == "native" and native.library() is None:
        pytest.skip("the C kernels are not built")
    st = settings_for(**INT)
    lm = load_model(model_path, st)
    eng = lm.engine
    saved = eng.backend, eng.device
    try:
        eng.backend, eng.device, eng._state = backend, DEVICE, None
        assert nc05.encode_frame(lm, st, _golden("golden.txt")) == _golden("golden-int.nc")
        assert nc06.encode_frame(lm, st, golden06_input(), choose_smaller=False) == _golden("golden-int06.nc")
    finally:
        (eng.backend, eng.device), eng._state = saved, None


@needs_native
@pytest.mark.parametrize("heads", [dict(), dict(bias_lr=10000), dict(bias_lr=10000, ctx_bias=10000), dict(ctx_bias=65536)])
def test_c_frequencies_and_bias_heads_equal_the_predictors(heads):
    """native.code_rows against predictors/online.Online: the same (start, freq), the same
    decoded symbols and the same learned biases, rows of three lanes interleaved."""
    from nacrith.codec.quantize import EXP2_TABLE, freqs_fixed, lookup_numpy, search_numpy
    from nacrith.predictors.online import Online, OnlineConfig
    from nacrith.xp import NumpyOps

    rng = np.random.default_rng(5)
    V, lanes = 3000, 3
    cfg = OnlineConfig(**heads)
    ref = Online(cfg, lanes, V, cap=64) if cfg.any else None
    mine = Online(cfg, lanes, V, cap=64) if cfg.any else None
    for step in range(12):
        lane = rng.permutation(lanes)[: rng.integers(1, lanes + 1)]
        z = (rng.standard_normal((len(lane), V)) * rng.uniform(1, 9) * 65536).astype(np.int64)
        z[:, : 3 + step] += 400000  # tokens that keep coming, for the heads to learn
        tgt = rng.integers(0, 3 + step, len(lane))
        decode = step % 2 == 1
        if ref is None:
            f = freqs_fixed(NumpyOps(), z, EXP2_TABLE)
        else:
            ref.cheap(lane)
            f = ref.freqs(z, lane)
        st, fr = lookup_numpy(f, tgt)
        if decode:
            slots = st + rng.integers(0, fr)
            sym, st2, fr2 = search_numpy(f, slots)
            assert (sym == tgt).all()
            got = native.code_rows(z, lane, mine, slots=slots)
            assert (got[0] == st2).all() and (got[1] == fr2).all() and (got[2] == tgt).all()
        else:
            got = native.code_rows(z, lane, mine, target=tgt)
            assert (got[0] == st).all() and (got[1] == fr).all()
        if ref is not None:
            ref.update(tgt, lane)
            for name in ("bias", "ctxb", "recent", "t"):
                if getattr(ref, name) is not None:
                    assert np.array_equal(getattr(ref, name), getattr(mine, name)), name


# -- the default: "auto" is the integer engine wherever it runs the model ----------------------


def test_auto_engine_is_int_for_llama_models_and_llama_cpp_otherwise(model_path, tmp_path):
    import gguf

    import nacrith
    from nacrith.api import DEFAULT_ENGINE, choose_engine
    from nacrith.formats import container

    assert DEFAULT_ENGINE == "auto"
    assert choose_engine("auto", model_path) == "int"
    assert choose_engine("auto", model_path, skip=60000) == "llama"  # the skip runs on llama.cpp only
    assert choose_engine("torch", model_path) == "torch"
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_engine("fast", model_path)
    # a GGUF of another architecture: llama.cpp may run it, the integer engine does not
    other = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(other), "qwen2")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert choose_engine("auto", other) == "llama"
    blob = nacrith.compress(b"the default engine", context=48, slide=16, chunk_bytes=200)
    header, _ = container.read_header(blob)
    assert header.settings["schedule"] == 3 and header.profile.startswith("nacrith-int ")
