import numpy as np
import pytest
import torch

from nacrith.codec import quantize as q


def _logit_cases():
    rng = np.random.default_rng(7)
    yield rng.normal(0, 3, size=(4, 49152)).astype(np.float32)
    yield np.zeros((1, 49152), dtype=np.float32)  # all ties
    peaked = rng.normal(0, 1, size=(2, 49152)).astype(np.float32)
    peaked[:, 123] = 80.0  # one token takes almost everything
    yield peaked
    yield rng.uniform(-60, 60, size=(3, 1000)).astype(np.float32)


@pytest.mark.parametrize("logits", list(_logit_cases()))
def test_frequencies_sum_and_floor(logits):
    f = q.frequencies(logits)
    assert f.dtype == np.int64
    assert (f.sum(axis=1) == q.TOTAL).all()
    assert f.min() >= 1


@pytest.mark.parametrize("logits", list(_logit_cases()))
def test_numpy_and_torch_give_the_same_integers(logits):
    a = q.frequencies(logits)
    b = q.frequencies_torch(torch.from_numpy(logits)).numpy()
    assert np.array_equal(a, b)


def test_ties_go_to_the_first_top_token():
    f = q.frequencies(np.zeros(10, dtype=np.float32))
    assert f[0] > f[1] and (f[1:] == f[1]).all()


def test_order_follows_logits():
    x = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    f = q.frequencies(x)
    assert list(np.argsort(f)) == [0, 1, 2, 3]


def test_non_finite_logits_are_refused():
    x = np.zeros(8, dtype=np.float32)
    x[3] = np.nan
    import nacrith

    # a NacrithError like every failure of the library, and still a FloatingPointError
    with pytest.raises(nacrith.NonFiniteLogitsError) as info:
        q.frequencies(x)
    assert isinstance(info.value, nacrith.NacrithError) and isinstance(info.value, FloatingPointError)
    import torch

    with pytest.raises(nacrith.NacrithError):
        q.frequencies_torch(torch.from_numpy(x))


def test_exp2_table_is_the_reference():
    assert q.table_digest() == q.TABLE_SHA256
    assert q.EXP2_TABLE[0] == 1 << q.WEIGHT_BITS


def test_cost_within_half_percent_of_float_softmax(model_path):
    """On real text, integer coding cost stays within 0.5% of -log2 p of the float softmax."""
    from nacrith.engines.llama_cpp.model import LlamaModel

    text = open(__file__.replace("test_quantize.py", "data/golden.txt"), "rb").read()
    m = LlamaModel(str(model_path), n_ctx=512, n_seq=1, n_batch=512)
    toks = m.tokenize(text)[:300]
    logits = m.decode([m.bos] + toks[:-1], list(range(len(toks))), [0] * len(toks), [1] * len(toks))
    m.close()
    f = q.frequencies(logits)
    ideal = 0.0
    coded = 0.0
    for row, t in zip(range(len(toks)), toks):
        x = logits[row].astype(np.float64)
        lse = x.max() + np.log(np.exp(x - x.max()).sum())
        ideal += -(x[t] - lse) / np.log(2)
        coded += q.cost_bits(f[row], t)
    assert ideal > 100
    assert coded <= ideal * 1.005
