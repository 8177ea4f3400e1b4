"""nacrith.cluster on a local Ray instance that the tests start (2 CPUs) and stop: the
same bytes as one process, a killed worker survived, errors are NacrithErrors."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import nacrith
from nacrith import cluster
from nacrith.errors import CorruptDataError

# 3 frames (595, 577 and 257 bytes); a small window: each task takes a second or two
SMALL = dict(engine="int", context=64, slide=16, chunk_bytes=300, frame_bytes=600)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def text():
    return (Path(__file__).parents[1] / "examples" / "sample.txt").read_bytes()[:1800]


@pytest.fixture(scope="module")
def single(model_path, text):
    return nacrith.Compressor(model=model_path, **SMALL).compress(text)


def test_cluster_output_equals_one_process(ray_local, model_path, text, single):
    c = cluster.Compressor(None, model=model_path, **SMALL)
    blob = c.compress(text)
    assert len(list(nacrith.formats.container.iter_frames(memoryview(blob)))) == 3
    assert blob == single
    assert cluster.Decompressor(None, model=model_path).decompress(blob) == text


def _task_pids(name: str) -> list[int]:
    """Processes whose title is Ray's for a running task of `name`."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(f"ray::{name}".encode()):
                pids.append(int(d))
    return pids


def test_a_killed_worker_is_survived(ray_local, model_path, text, single):
    result = {}

    def run():
        result["blob"] = cluster.Compressor(None, model=model_path, **SMALL).compress(text)

    th = threading.Thread(target=run)
    th.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and th.is_alive():
        pids = _task_pids("_encode_task")
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    th.join(timeout=600)
    assert killed is not None, "no running task was found to kill"
    assert result["blob"] == single


def test_damage_is_a_nacrith_error_from_the_cluster(ray_local, model_path, single):
    bad = bytearray(single)
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(CorruptDataError):
        cluster.Decompressor(None, model=model_path).decompress(bytes(bad))


def test_the_command_line_takes_a_cluster(ray_local, model_path, text, tmp_path, monkeypatch):
    """`nacrith --cluster local FILE` and `-d` (in this process, so on the fixture's Ray):
    the file of one process, and back, through the cluster classes."""
    from nacrith import cli

    used = []
    for cls, name in ((cluster.Compressor, "iter_frames"), (cluster.Decompressor, "iter_decompress")):
        orig = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _o=orig, _n=name, **k: (used.append(_n), _o(self, *a, **k))[1])

    src = tmp_path / "t.txt"
    src.write_bytes(text)
    opts = ["--model", str(model_path), "--engine", "int", "--context", "64", "--slide", "16", "--chunk-bytes", "300"]
    for argv in ([*opts, "--cluster", "local", str(src)], ["-d", "-f", "--model", str(model_path), "--cluster", "local",
                                                           str(tmp_path / "t.txt.nc")]):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code in (0, None)
    want = nacrith.Compressor(model=model_path, engine="int", context=64, slide=16, chunk_bytes=300).compress(text)
    assert (tmp_path / "t.txt.nc").read_bytes() == want
    assert src.read_bytes() == text  # decompressed over the input (-f): the same bytes
    assert used == ["iter_frames", "iter_decompress"]
