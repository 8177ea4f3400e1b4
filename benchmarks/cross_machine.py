"""Make and check the cross-machine files: python benchmarks/cross_machine.py make|check DIR DEVICE."""
import hashlib, sys, time
from pathlib import Path
import nacrith
mode, d, dev = sys.argv[1], Path(sys.argv[2]), (sys.argv[3] if sys.argv[3] != "native" else None)
src = Path("README.md").read_bytes()[:6000]
S = dict(engine="int", context=256, slide=64, chunk_bytes=1500)
if mode == "make":
    t = time.time(); blob = nacrith.compress(src, device=dev, **S)
    (d / f"made-{sys.argv[4]}.nc").write_bytes(blob)
    print("made", sys.argv[4], len(src), "->", len(blob), hashlib.sha256(blob).hexdigest()[:16], f"{time.time()-t:.1f}s")
else:
    for f in sorted(d.glob("made-*.nc")):
        t = time.time(); ok = nacrith.decompress(f.read_bytes(), device=dev) == src
        print("decoded", f.name, "on", dev or "native", ok, f"{time.time()-t:.1f}s")
