import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
SMALL_ARGS = ["--context", "48", "--slide", "16", "--chunk-bytes", "200", "--lanes", "3"]


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nacrith.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_compress_decompress_info(tmp_path):
    src = tmp_path / "g.txt"
    src.write_bytes((DATA / "golden.txt").read_bytes()[:200])
    r = run("compress", src, *SMALL_ARGS)
    assert r.returncode == 0, r.stderr
    assert "bpb" in r.stderr
    nc = tmp_path / "g.txt.nc"
    assert nc.exists()
    r = run("info", nc)
    assert r.returncode == 0 and "NC05" in r.stdout and "model sha256" in r.stdout and "context=48" in r.stdout
    src.rename(tmp_path / "orig.txt")
    r = run("decompress", nc)
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == (tmp_path / "orig.txt").read_bytes()


def test_existing_output_is_not_overwritten_without_force(tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(b"some text")
    out = tmp_path / "a.txt.nc"
    out.write_bytes(b"precious")
    r = run("compress", src, *SMALL_ARGS)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert out.read_bytes() == b"precious"
    r = run("compress", src, "--force", *SMALL_ARGS)
    assert r.returncode == 0 and out.read_bytes() != b"precious"


def test_corrupt_input_gives_one_line_and_no_output(tmp_path):
    src = tmp_path / "b.txt"
    src.write_bytes(b"text that will be damaged after compression")
    assert run("compress", src, *SMALL_ARGS).returncode == 0
    nc = tmp_path / "b.txt.nc"
    raw = bytearray(nc.read_bytes())
    raw[-8] ^= 0xFF
    nc.write_bytes(bytes(raw))
    src.unlink()
    r = run("decompress", nc)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("nacrith: ")
    assert not src.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b.txt.nc"]


def test_unknown_suffix_is_an_error(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    r = run("decompress", f)
    assert r.returncode == 1 and "suffix" in r.stderr


def test_non_text_is_refused_with_offset(tmp_path):
    f = tmp_path / "bin.dat"
    f.write_bytes(b"ok \xc3\x28 broken")
    r = run("compress", f, "--format", "nc05", *SMALL_ARGS)
    assert r.returncode == 1 and "offset 3" in r.stderr
    assert not (tmp_path / "bin.dat.nc").exists()
