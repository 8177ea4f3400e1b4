"""The gzip-style front end: pipes, several files, overwrite refusal, -t, -l, --rm."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
NAC = f"{shlex.quote(sys.executable)} -m nacrith.cli"
SMALL = "--context 48 --slide 16 --chunk-bytes 200 --lanes 3"


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], cwd=cwd, capture_output=True, text=True)


def test_pipes_round_trip(tmp_path):
    (tmp_path / "f").write_bytes((DATA / "golden.txt").read_bytes()[:300])
    r = sh(f"cat f | {NAC} -c {SMALL} > f.nc && {NAC} -dc f.nc | cmp - f", tmp_path)
    assert r.returncode == 0, r.stderr
    # no file at all means stdin to stdout as well
    r = sh(f"{NAC} {SMALL} < f > g.nc && {NAC} -d < g.nc | cmp - f", tmp_path)
    assert r.returncode == 0, r.stderr


def test_binary_through_a_pipe(tmp_path):
    (tmp_path / "b").write_bytes(bytes(range(256)) * 40)
    r = sh(f"{NAC} -c {SMALL} < b | {NAC} -d | cmp - b", tmp_path)
    assert r.returncode == 0, r.stderr


def test_several_files_keep_inputs_and_add_suffix(tmp_path):
    for n in ("a.txt", "b.txt"):
        (tmp_path / n).write_bytes(f"file {n} says hello".encode())
    r = sh(f"{NAC} {SMALL} a.txt b.txt", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.txt.nc").exists() and (tmp_path / "b.txt.nc").exists()
    assert (tmp_path / "a.txt").exists()  # input kept by default
    os.rename(tmp_path / "a.txt", tmp_path / "a.orig")
    os.rename(tmp_path / "b.txt", tmp_path / "b.orig")
    r = sh(f"{NAC} -d a.txt.nc b.txt.nc && cmp a.txt a.orig && cmp b.txt b.orig", tmp_path)
    assert r.returncode == 0, r.stderr


def test_overwrite_is_refused_without_force(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"new words")
    (tmp_path / "a.txt.nc").write_bytes(b"precious")
    r = sh(f"{NAC} {SMALL} a.txt", tmp_path)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert (tmp_path / "a.txt.nc").read_bytes() == b"precious"
    r = sh(f"{NAC} -f {SMALL} a.txt", tmp_path)
    assert r.returncode == 0 and (tmp_path / "a.txt.nc").read_bytes() != b"precious"


def test_test_flag_on_good_and_corrupted_files(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"text to be tested")
    assert sh(f"{NAC} {SMALL} a.txt", tmp_path).returncode == 0
    r = sh(f"{NAC} -t -v a.txt.nc", tmp_path)
    assert r.returncode == 0 and "OK" in r.stderr
    raw = bytearray((tmp_path / "a.txt.nc").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (tmp_path / "bad.nc").write_bytes(bytes(raw))
    r = sh(f"{NAC} -t bad.nc", tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("nacrith: bad.nc:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.nc", "bad.nc"]


def test_list_shows_the_header(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"listing this")
    assert sh(f"{NAC} {SMALL} a.txt", tmp_path).returncode == 0
    r = sh(f"{NAC} -l a.txt.nc", tmp_path)
    assert r.returncode == 0 and "NC05" in r.stdout and "model sha256" in r.stdout


def test_unknown_suffix_and_existing_suffix(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"abc")
    r = sh(f"{NAC} -d x.bin", tmp_path)
    assert r.returncode == 1 and "unknown suffix" in r.stderr
    (tmp_path / "y.nc").write_bytes(b"abc")
    r = sh(f"{NAC} {SMALL} y.nc", tmp_path)
    assert r.returncode == 2 and "already has .nc suffix" in r.stderr


def test_rm_removes_input_only_after_a_good_write(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"remove me later")
    r = sh(f"{NAC} --rm {SMALL} a.txt", tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "a.txt").exists() and (tmp_path / "a.txt.nc").exists()
    r = sh(f"{NAC} -d --rm a.txt.nc", tmp_path)
    assert r.returncode == 0 and (tmp_path / "a.txt").read_bytes() == b"remove me later"
    assert not (tmp_path / "a.txt.nc").exists()


def test_refuses_to_write_compressed_data_to_a_terminal(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    # `script` gives the child a terminal as stdout
    r = subprocess.run(
        ["script", "-qec", f"{NAC} -c {SMALL} a.txt", "/dev/null"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 1 and "terminal" in r.stdout


def test_missing_file_is_an_error_but_others_still_run(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"exists")
    r = sh(f"{NAC} {SMALL} nope.txt a.txt", tmp_path)
    assert r.returncode == 1 and "nope.txt" in r.stderr
    assert (tmp_path / "a.txt.nc").exists()


def test_ctrl_c_leaves_no_partial_files(tmp_path):
    import signal
    import time

    text = (DATA / "golden.txt").read_bytes() * 12
    (tmp_path / "big.txt").write_bytes(text)
    p = subprocess.Popen(
        [sys.executable, "-m", "nacrith.cli", *SMALL.split(), "big.txt"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # wait until the model runs (a temporary output file appears), then interrupt
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.name.endswith(".tmp") for n in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    assert p.poll() is None, "compression finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err
    assert sorted(n.name for n in tmp_path.iterdir()) == ["big.txt"]


def test_version_names_formats_engines_and_the_model(tmp_path):
    from nacrith import __version__
    from nacrith.engines.integer import spec
    from nacrith.modelfile import default_model_path, model_sha256

    r = sh(f"{NAC} --version", tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"nacrith {__version__}"
    assert f"int (arithmetic version {spec.VERSION})" in r.stdout
    assert "3 (int)" in r.stdout and "1 (llama)" in r.stdout
    assert model_sha256(default_model_path()) in lines[-1]
