"""What every ``lineguard`` command shares: parameters (file, product file, ``key=value``), path checks.

Nothing here imports the training stack: arguments and paths are checked before any command pays
for torch or anomalib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving.errors import ConfigError, DatasetError


def add_params_args(p: argparse.ArgumentParser) -> None:
    """``--params``, ``--config`` and positional ``key=value`` overrides."""
    p.add_argument("--config", metavar="PRODUCT.yaml", help="a product's parameters, over params.yaml "
                                                            "(e.g. products/bottle.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="parameter overrides, e.g. model.input_size=256 calibration.target_frr=0.02")


def params_path(args: argparse.Namespace) -> Path | None:
    """The base parameters file: ``--params`` (must exist), else the project's ``params.yaml``, else none."""
    from flows.settings import project_root

    if args.params:
        path = Path(args.params)
        if not path.is_file():
            raise ConfigError(f"{path}: parameters file not found (given with --params)")
        return path
    default = project_root() / "params.yaml"
    if default.is_file():
        return default
    print(f"note: no params.yaml in {project_root()} or above; using built-in defaults", file=sys.stderr)
    return None


def load(args: argparse.Namespace, **flags):
    """The run's parameters: base file, then ``--config``, then ``key=value``, then the command's own flags."""
    from flows.params import load_params, parse_overrides

    overrides = parse_overrides(getattr(args, "overrides", None) or [])
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_params(params_path(args), overrides, getattr(args, "config", None))


def require_dataset(path: str) -> Path:
    """A data folder in MVTec layout, checked cheaply (names only) before anything heavy is imported."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found; expected MVTec AD layout: train/good/*.png, optional "
                           "test/<type>/ and ground_truth/<type>/<stem>_mask.png")
    return root


def require_bundle(path: str) -> Path:
    """A bundle folder that exists (its hashes are checked when it is loaded)."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such bundle folder; check --bundle (bundles are written by `lineguard enroll`)")
    if not (root / "manifest.json").is_file():
        raise ConfigError(f"{root}: no manifest.json, so not an exported bundle; run `lineguard export --bundle {root}`")
    return root


def fresh_output(path: str, force: bool) -> Path:
    """An output folder that may be written: refuses to replace an existing bundle unless ``--force``."""
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out}: already holds a bundle; pass --force to replace it, or write a new version "
                          f"with --out {out.parent / (out.name + '-v2')}")
    return out


def fmt(v) -> str:
    """A metric for a person: four decimals, or n/a."""
    return "n/a" if v is None else f"{v:.4f}"
