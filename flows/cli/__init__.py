"""``lineguard``: the pipeline's command line. Each command checks its arguments, then calls one plain function.

Heavy imports happen inside the commands, after the checks, so ``lineguard --help`` is instant, a
mistyped path is reported at once, and ``lineguard evaluate`` (serving engine only) never loads torch.

>>> build_parser().parse_args(["enroll", "--data", "d", "--out", "b"]).model is None
True
"""

from __future__ import annotations

import argparse
import sys

from serving.errors import exit_code


def version_line() -> str:
    """``lineguard <version> (bundle schema N, record version M)``."""
    import serving
    from serving.engine.manifest import SCHEMA_VERSION
    from serving.evidence.record import RECORD_VERSION

    return f"lineguard {serving.__version__} (bundle schema {SCHEMA_VERSION}, record version {RECORD_VERSION})"


def build_parser() -> argparse.ArgumentParser:
    """The pipeline CLI's argument parser (command modules add their own subcommands)."""
    from flows.cli import anomaly, drift, fleet, loop, orchestration

    p = argparse.ArgumentParser(prog="lineguard", description="Lineguard pipeline: enroll, calibrate, evaluate, "
                                "export, and the loop that keeps a station learning")
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--params", help="base parameters file (default: params.yaml of the project)")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    for module in (anomaly, drift, loop, orchestration, fleet):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; input errors exit 2 with a one-line message, not a traceback."""
    args = build_parser().parse_args(argv)
    import warnings

    from flows.settings import project_root, quiet_environment

    quiet_environment(project_root())
    # timm and anomalib warn about their own internal deprecations on import; not actionable here.
    warnings.filterwarnings("ignore", category=FutureWarning)
    return exit_code(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
