"""Levels -1 .. -9: each is a documented set of stored settings, level 6 the defaults."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import nacrith
from nacrith.api import settings_for
from nacrith.cli import level_args
from nacrith.formats import container
from nacrith.presets import LEVELS, matching_level

DATA = Path(__file__).parent / "data"
TEXT = (DATA / "golden.txt").read_bytes()[:200]
NAC = f"{shlex.quote(sys.executable)} -m nacrith.cli"


def test_every_level_is_stored_and_named_back():
    seen = set()
    for level in LEVELS:
        st = settings_for("int", level)
        fields = st.header_fields()
        assert matching_level(fields, "int") == level
        seen.add(tuple(sorted(fields.items())))
    assert len(seen) == len(LEVELS)  # nine different sets of settings
    assert settings_for("int", 6) == settings_for("int")  # 6 is the default
    assert settings_for("int", 1).context < settings_for("int", 6).context < settings_for("int", 9).context
    with pytest.raises(ValueError):
        settings_for("int", 10)


def test_a_level_is_in_the_file_and_explicit_settings_win():
    blob = nacrith.compress(TEXT, level=2)
    header = container.read_header(blob)[0]
    assert header.settings == settings_for("int", 2).header_fields()
    assert nacrith.decompress(blob) == TEXT
    mine = container.read_header(nacrith.compress(TEXT, level=2, context=300))[0].settings
    assert mine["context"] == 300 and mine["chunk_bytes"] == LEVELS[2]["chunk_bytes"]
    assert matching_level(mine, "int") is None


def test_gzip_level_flags_are_spelled_for_the_parser():
    assert level_args(["-9", "a"]) == ["--level", "9", "a"]
    assert level_args(["-d9c"]) == ["--level", "9", "-dc"]
    assert level_args(["--fast", "--best"]) == ["--level", "1", "--level", "9"]
    assert level_args(["--context", "48", "--", "-3"]) == ["--context", "48", "--", "-3"]
    assert level_args(["-12"]) == ["-12"]


def test_level_flags_on_the_command_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(TEXT)

    def run(args):
        return subprocess.run(["bash", "-c", f"{NAC} {args}"], cwd=tmp_path, capture_output=True, text=True)

    for flag, level in (("-1", 1), ("--best", 9), ("-3", 3), ("", 6)):
        r = run(f"-f {flag} a.txt")
        assert r.returncode == 0, r.stderr
        settings = container.read_header((tmp_path / "a.txt.nc").read_bytes())[0].settings
        assert settings == settings_for("int", level).header_fields(), flag
        assert f"level: -{level}" in run("-lv a.txt.nc").stdout
    r = run("-f -3 a.txt --context 300")
    assert container.read_header((tmp_path / "a.txt.nc").read_bytes())[0].settings["context"] == 300
    assert "level: none" in run("info a.txt.nc").stdout
    r = run("compress -f --level 4 a.txt")
    assert r.returncode == 0, r.stderr
    assert container.read_header((tmp_path / "a.txt.nc").read_bytes())[0].settings == settings_for("int", 4).header_fields()
    r = run("-f --level 0 a.txt")
    assert r.returncode == 2 and "level" in r.stderr.lower()
