"""Loop benchmark: the whole hybrid loop on MVTec AD bottle with the product's full detector settings, each step
timed (station replay, review, Label Studio push, labeling, pull, retrain, deploy, check) and the total.

    .venv/bin/python benchmarks/bench_loop.py [--work benchmarks/out/loop] [key=value ...]

It is ``lineguard loop demo --json`` with the bottle product file; the printed table goes to benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    work = Path(sys.argv[sys.argv.index("--work") + 1] if "--work" in sys.argv else ROOT / "benchmarks" / "out" / "loop")
    extra = [a for a in sys.argv[1:] if "=" in a]
    bottle = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
    cmd = [sys.executable, "-m", "flows.cli", "loop", "demo", "--work", str(work), "--bottle", str(bottle), "--json",
           "tracking.enabled=false", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        print(out.stderr[-4000:])
        return out.returncode
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"MVTec AD bottle, {r['reviewed']} defects through the loop, {len(r['named'])} held out\n")
    print("| step | seconds |\n|---|---|")
    for k, v in r["steps"].items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{r['total_s']:.1f}** ({r['total_s'] / 60:.1f} min) |\n")
    d = r["detector"]
    print(f"detector: mAP50 {d['map50']:.3f} on {d['n_val']} held-out labeled parts; AP50 "
          + ", ".join(f"{k} {v:.2f}" for k, v in d["per_class"].items()) + "; precision / recall at the deployed "
          "confidence " + ", ".join(f"{k} {d['precision'][k]:.2f}/{d['recall'][k]:.2f}" for k in d["per_class"]))
    for name, v in r["named"].items():
        print(f"held-out {name}: {v['verdict']} by {v['rule']}, class {v['class']} (truth {r['truth'][name]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
