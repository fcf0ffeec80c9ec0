"""``lineguard labels ...`` and ``lineguard detector ...``: the review -> Label Studio -> YOLO loop."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.cli.common import add_params_args, fresh_output, load, require_bundle
from serving.errors import ConfigError


def store_path(args: argparse.Namespace) -> Path:
    """The label store: ``--store`` or ``data/labels`` of the project."""
    from flows.settings import project_root

    return Path(args.store) if args.store else project_root() / "data" / "labels"


def register(sub) -> None:
    """Add these commands to the ``lineguard`` parser."""
    lab = sub.add_parser("labels", help="Label Studio: its server, push confirmed defects, pull annotations, status")
    ls = lab.add_subparsers(dest="labels_command", required=True, metavar="action")
    srv = ls.add_parser("server", help="start, stop or check the project's Label Studio (own venv, 127.0.0.1)")
    srv.add_argument("action", choices=["start", "stop", "status"])
    srv.add_argument("--port", type=int, default=8080, help="start: port on 127.0.0.1 (default 8080)")
    srv.set_defaults(func=cmd_server)
    for name, helptext, fn in (("push", "push parts confirmed as defects as pre-annotated tasks", cmd_push),
                               ("pull", "pull completed annotations into the label store", cmd_pull),
                               ("status", "labeled examples per class, and whether a retrain is due", cmd_status),
                               ("dataset", "write the YOLO dataset from the label store (a DVC stage)", cmd_dataset)):
        p = ls.add_parser(name, help=helptext)
        p.add_argument("--store", help="label store folder (default: data/labels of the project)")
        if name == "push":
            p.add_argument("--evidence", required=True, help="the stations' sync target (folder, file:// or s3://)")
            p.add_argument("--key", required=True, help="the evidence key file (to decrypt the parts' pictures)")
            p.add_argument("--bundle", required=True, help="anomaly bundle whose map pre-draws the boxes")
            p.add_argument("--default-class", help="class for parts the operator confirmed without one")
        if name == "dataset":
            p.add_argument("--out", help="dataset folder (default: STORE/yolo)")
            p.add_argument("--goods", help="good images to paste defects into (copy-paste synthesis)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        add_params_args(p)
        p.set_defaults(func=fn)

    det = sub.add_parser("detector", help="train a YOLO defect detector into a detector bundle")
    ds = det.add_subparsers(dest="detector_command", required=True, metavar="action")
    t = ds.add_parser("train", help="train, evaluate, export with a parity check, register")
    t.add_argument("--data", required=True, help="a YOLO dataset (data.yaml) or an MVTec AD-layout folder with masks")
    t.add_argument("--out", required=True, help="detector bundle folder to write")
    t.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    add_params_args(t)
    t.set_defaults(func=cmd_train)


def cmd_server(args: argparse.Namespace) -> int:
    """The project's Label Studio."""
    from flows.labels import server

    if args.action == "start":
        info = server.start(args.port)
        print(f"Label Studio up at {info['url']} (pid {info['pid']}); images served from {info['files_root']}; "
              "stop it with `lineguard labels server stop`")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    else:
        print(json.dumps(server.status(), indent=1))
    return 0


def _title(params) -> str:
    return params.labels.project.format(product=params.product)


def _classes(params) -> list[str]:
    if not params.labels.classes:
        raise ConfigError("labels.classes is empty: list the product's defect classes in its product file "
                          "(e.g. products/bottle.yaml) or pass labels.classes=[a,b]")
    return params.labels.classes


def cmd_push(args: argparse.Namespace) -> int:
    """Confirmed defects from the synced evidence to Label Studio (queued when it is down)."""
    require_bundle(args.bundle)
    if not Path(args.key).is_file():
        raise ConfigError(f"{args.key}: evidence key file not found (--key); the engineer's copy of evidence.key_file")
    params = load(args)
    from flows.labels import server, studio

    store = studio.LabelStore(store_path(args))
    info = server.connection()
    tasks, problems = studio.defect_tasks(args.evidence, args.key, args.bundle, store, _classes(params),
                                          info.files_root, args.default_class)
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    r = studio.push(store, tasks, info, _title(params), _classes(params))
    print(json.dumps(r.__dict__) if args.json else
          f"pushed {r.pushed} task(s) to project {r.project_id} ({r.already_there} already there)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Annotations back from Label Studio."""
    params = load(args)
    from flows.labels import server, studio

    r = studio.pull(studio.LabelStore(store_path(args)), server.connection(), _classes(params))
    for p in r.problems:
        print(f"left out: {p}", file=sys.stderr)
    print(json.dumps(r.__dict__) if args.json else
          f"pulled: {r.new} new, {r.updated} updated, {r.unchanged} unchanged, {r.removed} removed "
          f"({len(r.deleted_tasks)} task(s) deleted in Label Studio)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Per-class counts and whether a retrain is due."""
    params = load(args)
    from flows.labels import server, studio

    s = studio.status(studio.LabelStore(store_path(args)), _classes(params), params.labels.min_per_class,
                      server.connection())
    if args.json:
        print(json.dumps(s))
        return 0
    for c, v in s["classes"].items():
        print(f"{c:<20} {v['examples']:>4} labeled, {v['trained_on']:>4} trained on: "
              f"{'RETRAIN DUE' if v['retrain'] else v['why']}")
    print(f"queued for Label Studio: {s['queued']}" + (f" (unreachable: {s['last_error']})" if s["last_error"] else ""))
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    """The YOLO dataset of the label store."""
    params = load(args)
    from flows.detector.dataset import build
    from flows.labels import studio
    from serving.images import list_images

    store = studio.LabelStore(store_path(args))
    goods = list_images(args.goods) if args.goods else []
    d, lp = params.detector, params.labels
    info = build(studio.labeled_images(store), args.out or store.root / "yolo", classes=_classes(params), goods=goods,
                 val_fraction=lp.val_fraction, seed=lp.seed, synthetic_per_good=d.synthetic_per_good if goods else 0,
                 real_repeat=d.real_repeat, rotate=d.rotate)
    print(json.dumps({"root": str(info.root), "counts": info.counts, "n_train": info.n_train, "n_val": info.n_val})
          if args.json else f"dataset {info.root}: {info.n_train} train / {info.n_val} val images; {info.counts}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a detector bundle."""
    if not Path(args.data).is_dir():
        raise ConfigError(f"{args.data}: no such folder (--data): a YOLO dataset or an MVTec AD-layout folder")
    fresh_output(args.out, args.force)
    params = load(args)
    from flows.detector.train import train_detector

    r = train_detector(args.data, args.out, params)
    if args.json:
        print(json.dumps(r.summary()))
    else:
        print(f"detector {r.bundle_version}: mAP50 {r.map50:.3f} on {r.n_val} held-out images "
              f"({', '.join(f'{k} {v:.2f}' for k, v in r.per_class.items())}); trained on {r.n_train} images "
              f"({r.n_synthetic} synthetic) in {r.seconds / 60:.1f} min; bundle {r.out}")
    return 0
