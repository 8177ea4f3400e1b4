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
