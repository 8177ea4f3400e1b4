import pytest

# Small windows and chunks so that the window slides and several lanes run
# within a second or two on a 2-core CPU, with the real model.
SMALL = dict(context=48, slide=16, chunk_bytes=200, lanes=3)


@pytest.fixture(scope="session")
def small():
    return dict(SMALL)


@pytest.fixture(scope="session")
def model_path():
    from nacrith.modelfile import default_model_path

    return default_model_path()


def assert_same_bitstream(new: bytes, golden: bytes) -> None:
    """The same frame header fields and the same table, payloads and end bytes. The
    golden files were written before the profile text was packed (header flag 0), so
    only the header's bytes may differ, and only in how they spell the profile."""
    from nacrith.formats import container

    assert container.read_header(new)[0] == container.read_header(golden)[0]
    table_new = 16 + int.from_bytes(new[8:12], "little")
    table_old = 16 + int.from_bytes(golden[8:12], "little")
    assert new[table_new:] == golden[table_old:]
    assert len(new) <= len(golden)


def golden_here(name: str) -> bytes:
    """A golden file's bytes, or a skip naming both engines when it was made by a
    llama.cpp build with other CPU features: its floats, and so its bits, differ there
    (the profile in the header says so; the decoder would report an engine mismatch)."""
    from pathlib import Path

    from nacrith.formats import container
    from nacrith.engines.llama_cpp.model import _init_backend, engine_profile

    blob = (Path(__file__).parent / "data" / name).read_bytes()
    _init_backend()
    here = engine_profile(1)
    made = container.read_header(blob)[0].profile
    if made != here:
        pytest.skip(f"{name} was made by '{made}'; this machine runs '{here}'")
    return blob


def run_in_interpreter(path: str, summary: str) -> None:
    """Run the test file `path` in a process where Triton's interpreter makes the kernels
    (so they run on the CPU) and check that pytest's last line starts with `summary`: no
    kernel test was skipped there that should have run."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1", NACRITH_TEST_DEVICE="cpu")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(summary), last
