"""The gzip-style front end: pipes, several files, overwrite refusal, -t, -l, --rm."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
NAC = f"{shlex.quote(sys.executable)} -m nacrith.cli"
DEFAULT_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
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


def test_list_is_a_table_row_per_file_with_totals(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"listing this")
    (tmp_path / "b.bin").write_bytes(bytes(range(256)) * 4)
    assert sh(f"{NAC} {SMALL} a.txt b.bin", tmp_path).returncode == 0
    a, b = (tmp_path / "a.txt.nc").stat().st_size, (tmp_path / "b.bin.nc").stat().st_size
    r = sh(f"{NAC} -l a.txt.nc b.bin.nc", tmp_path)
    assert r.returncode == 0, r.stderr
    head, row_a, row_b, total = r.stdout.splitlines()
    assert head.split() == ["Frames", "Compressed", "Uncompressed", "bpb", "Engine", "Model", "Filename"]
    assert row_a.split() == ["1", f"{a:,}", "12", f"{a * 8 / 12:.4f}", "int", DEFAULT_SHA[:16], "a.txt.nc"]
    # a frame without text needs no model: no engine, no model
    assert row_b.split() == ["1", f"{b:,}", "1,024", f"{b * 8 / 1024:.4f}", "-", "-", "b.bin.nc"]
    assert total.split() == ["2", f"{a + b:,}", "1,036", f"{(a + b) * 8 / 1036:.4f}", "2", "files"]
    # -v adds each frame's header; a damaged file is an error on its own line, the rest listed
    (tmp_path / "bad.nc").write_bytes(b"NC05 not really")
    r = sh(f"{NAC} -l -v bad.nc a.txt.nc", tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("nacrith: bad.nc:")
    assert "model sha256" in r.stdout and "settings:" in r.stdout and r.stdout.splitlines()[1].split()[-1] == "a.txt.nc"


def test_progress_shows_on_a_terminal_only(tmp_path):
    """With stderr on a terminal a bar shows bytes, tokens/s and the running bpb; -q or
    stderr to a file or pipe: nothing."""
    import pty

    (tmp_path / "p.txt").write_bytes((DATA / "golden.txt").read_bytes()[:300])
    cmd = [sys.executable, "-m", "nacrith.cli", *SMALL.split(), "p.txt"]

    def on_tty(args):
        import threading

        import fcntl
        import struct
        import termios

        leader, follower = pty.openpty()
        # a new pty is 0 x 0 characters, where tqdm draws nothing: give it a terminal's size
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        out = []

        def drain():  # read while the child runs: a pty may drop what is unread at hang-up
            while True:
                try:
                    chunk = os.read(leader, 1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                out.append(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        proc = subprocess.run(args, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=follower, timeout=600)
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
        return proc.returncode, b"".join(out).decode(errors="replace")

    rc, err = on_tty(cmd)
    assert rc == 0 and "p.txt: compress" in err and "tok/s" in err and "bpb" in err
    rc, err = on_tty([*cmd[:3], "-d", "-f", "p.txt.nc"])
    assert rc == 0 and "p.txt.nc: decompress" in err and "tok/s" in err
    rc, err = on_tty([*cmd[:3], "-q", "-d", "-f", "p.txt.nc"])
    assert rc == 0 and err == ""
    r = sh(f"{NAC} -d -f p.txt.nc", tmp_path)  # stderr is a pipe here
    assert r.returncode == 0 and r.stderr == ""


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


def test_outputs_keep_the_inputs_mode_and_time(tmp_path):
    src = tmp_path / "m.txt"
    src.write_bytes(b"keep my mode and time")
    os.chmod(src, 0o640)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    assert sh(f"{NAC} {SMALL} m.txt", tmp_path).returncode == 0
    packed = tmp_path / "m.txt.nc"
    assert packed.stat().st_mode & 0o777 == 0o640 and packed.stat().st_mtime == 1_600_000_000
    os.chmod(packed, 0o604)
    src.unlink()
    assert sh(f"{NAC} -d m.txt.nc", tmp_path).returncode == 0
    assert src.stat().st_mode & 0o777 == 0o604 and src.stat().st_mtime == 1_600_000_000
    # the subcommands as well
    assert sh(f"{NAC} compress {SMALL} m.txt -o n.nc", tmp_path).returncode == 0
    assert (tmp_path / "n.nc").stat().st_mode & 0o777 == 0o604


def test_rm_keeps_the_input_unless_the_output_decodes_back_to_it(tmp_path, monkeypatch):
    """A structurally valid .nc file of other bytes (here: a compressor that codes the
    wrong data) must not cost the input: --rm decodes and compares digests first."""
    import nacrith
    from nacrith import cli

    src = tmp_path / "r.txt"
    src.write_bytes(b"the real input")
    wrong = nacrith.compress(b"other bytes", context=48, slide=16, chunk_bytes=200)

    def bad_stream(self, source, write, total=None, label=""):
        data = source.read()
        write(wrong)
        return len(data), len(wrong)

    monkeypatch.setattr(cli._Job, "compress_stream", bad_stream)
    opts = dict(decompress=False, stdout=False, rm=True, force=False, test=False, list=False, quiet=True,
                verbose=False, model=None, fmt="auto", context=48, slide=16, chunk_bytes=200, lanes=None,
                chunk_tokens=None, threads=None, engine="auto", device=None, gpus=None, predictors={})
    with pytest.raises(nacrith.CorruptDataError, match="kept"):
        cli._one(cli._Job(opts), str(src))
    assert src.read_bytes() == b"the real input"
    assert (tmp_path / "r.txt.nc").read_bytes() == wrong  # complete and valid, only not this input


def test_an_error_is_not_masked_by_a_later_warning(tmp_path):
    """gzip's exit status: 1 once any file failed, 2 only if there were warnings alone."""
    (tmp_path / "x.nc").write_bytes(b"not compressed by us")
    r = sh(f"{NAC} {SMALL} nope.txt x.nc", tmp_path)  # an error, then a warning
    assert r.returncode == 1, r.stderr
    assert "nope.txt" in r.stderr and "already has .nc suffix" in r.stderr
    r = sh(f"{NAC} {SMALL} x.nc", tmp_path)  # the warning alone
    assert r.returncode == 2, r.stderr


def test_a_backend_failure_is_one_line_and_the_other_files_go_on(tmp_path, monkeypatch, capsys):
    """A RuntimeError inside an engine (as llama.cpp or CUDA raise) fails that file with
    one line naming it; the next file is still compressed, and the exit status is 1."""
    from nacrith import cli
    from nacrith.engines.integer.coding import IntEngine

    texts = {n: (DATA / "golden.txt").read_bytes()[i * 50 : i * 50 + 300] for i, n in enumerate("abc")}
    for n, t in texts.items():
        (tmp_path / f"{n}.txt").write_bytes(t)
    real = IntEngine.encode
    calls = []

    def flaky(self, settings, bos, token_lists, progress=None):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return real(self, settings, bos, token_lists, progress)

    monkeypatch.setattr(IntEngine, "encode", flaky)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(SMALL.split() + ["--engine", "int", "a.txt", "b.txt", "c.txt"])
    err = capsys.readouterr().err
    assert info.value.code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("nacrith:")]
    assert lines == ["nacrith: b.txt: int engine failed: device lost"], err
    assert (tmp_path / "a.txt.nc").exists() and (tmp_path / "c.txt.nc").exists()
    assert not (tmp_path / "b.txt.nc").exists() and not list(tmp_path.glob(".b.txt*"))
