"""Several threads compressing and decompressing at once share one cached engine
(api.load_model): their outputs must be the ones a single thread gets."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import nacrith

DATA = Path(__file__).parent / "data"
TEXT = (DATA / "golden.txt").read_bytes()


@pytest.mark.parametrize("engine", ["int", "llama"])
def test_concurrent_compressions_equal_the_single_threaded_ones(engine, small):
    texts = [TEXT[i * 97 : i * 97 + 420] for i in range(6)]
    opts = dict(small, engine=engine)
    alone = [nacrith.compress(t, **opts) for t in texts]
    shared = nacrith.Compressor(**opts)  # one object used by every thread, too
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda t: nacrith.compress(t, **opts), texts))
        one_object = list(pool.map(shared.compress, texts))
        back = list(pool.map(nacrith.decompress, alone))
    assert together == alone
    assert one_object == alone
    assert back == texts


def test_backend_failures_are_nacrith_errors(small, monkeypatch):
    """Every engine call goes through engines.Exclusive: what a backend raises comes out
    as a NacrithError that is also what it was (RuntimeError, MemoryError)."""
    from nacrith.engines.integer.coding import IntEngine

    for raised, wanted, also in [
        (RuntimeError("CUDA error: an illegal memory access"), nacrith.EngineError, RuntimeError),
        (MemoryError(), nacrith.OutOfMemoryError, MemoryError),
        (FloatingPointError("overflow"), nacrith.EngineError, RuntimeError),
    ]:
        def fail(*a, exc=raised, **k):
            raise exc

        monkeypatch.setattr(IntEngine, "encode", fail)
        with pytest.raises(wanted) as info:
            nacrith.compress(TEXT[:300], engine="int", **small)
        assert isinstance(info.value, nacrith.NacrithError) and isinstance(info.value, also)
