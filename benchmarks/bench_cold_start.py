"""Cold start, A/B: the station's process spawn -> first verdict for two or more code trees, alternating.

A change to the start moves it by tens of milliseconds, and a busy 2-core VM moves a single fresh process by
a hundred; runs of one tree and then the other would compare the machine's moods. So each round spawns one
fresh ``serving.cli bench --first-verdict`` process per tree, in alternating order, and the figures are
medians with their interquartile range, plus the process's CPU time (all its threads), which noise moves less.

    git worktree add /tmp/before HEAD~1
    .venv-station/bin/python benchmarks/bench_cold_start.py --bundle models/elpv/bundle \\
        --image data/elpv/test/good/cell2415.png /tmp/before .      # trees: folders that hold serving/

Run ``python -m compileall -q TREE/serving`` for each tree first when PYTHONDONTWRITEBYTECODE is set: a
station's installed package has its bytecode, and compiling on every start is not what it pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.errors import LineguardError  # noqa: E402
from serving.station.bench import one_start  # noqa: E402 - the station's own cold-start measurement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", type=Path, help="folders holding a serving/ package to compare")
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=30, help="fresh processes per tree")
    args = ap.parse_args()
    for t in args.trees:
        if not (t / "serving" / "cli.py").is_file():
            sys.exit(f"{t}: no serving/cli.py there; pass folders that hold the station's code")
    trees, bundle, image = [t.resolve() for t in args.trees], args.bundle.resolve(), args.image.resolve()
    res: dict[Path, list[tuple[float, float, float]]] = {t: [] for t in trees}
    for i in range(args.runs):  # a station venv has no tqdm: a plain progress line
        for t in trees if i % 2 == 0 else trees[::-1]:
            try:
                res[t].append(one_start(bundle, image, cwd=t))
            except LineguardError as exc:
                sys.exit(f"{t}: {exc}")
        print(f"\rround {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{args.runs} fresh processes per tree, alternating; bundle {bundle}")
    for t, rows in res.items():
        spawn, load, cpu = zip(*rows)
        q = statistics.quantiles(spawn, n=4)
        print(f"{t}: process spawn -> first verdict p50 {statistics.median(spawn):.0f} ms (IQR {q[0]:.0f}-{q[2]:.0f})"
              f", bundle load -> first verdict p50 {statistics.median(load):.0f} ms"
              f", process CPU p50 {statistics.median(cpu):.0f} ms")


if __name__ == "__main__":
    main()
