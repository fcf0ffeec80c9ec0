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
            p.add_argument("--cron", help="instead of once, schedule push + pull (the label-sync flow), e.g. "
                                          "'*/30 * * * *' (needs `lineguard scheduler start`)")
        if name == "dataset":
            p.add_argument("--out", help="dataset folder (default: yolo/ beside the store, i.e. data/yolo)")
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
    register_demo(sub)
    r = ds.add_parser("retrain", help="retrain from the label store if a class has min_per_class new examples")
    r.add_argument("--store", help="label store folder (default: data/labels of the project)")
    r.add_argument("--out", required=True, help="folder under which the new detector version is written")
    r.add_argument("--goods", help="good images to paste defects into (copy-paste synthesis)")
    r.add_argument("--force", action="store_true", help="train even if no class is due")
    r.add_argument("--cron", help="instead of once, schedule it, e.g. '0 3 * * *' (needs `lineguard scheduler start`)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    add_params_args(r)
    r.set_defaults(func=cmd_retrain)


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
    if args.cron:
        from flows.orchestration.scheduler import add_schedule

        url = args.evidence if "://" in args.evidence else str(Path(args.evidence).resolve())
        spec = add_schedule("label-sync", "label-sync", args.cron, {
            "evidence": url, "key": str(Path(args.key).resolve()), "bundle": str(Path(args.bundle).resolve()),
            "store": str(store_path(args).resolve())})
        print(f"scheduled {spec.name}: push + pull at '{args.cron}' (UTC); see `lineguard scheduler status`")
        return 0
    from flows.labels import server, studio

    store = studio.LabelStore(store_path(args))
    r, problems = studio.push_confirmed(store, server.connection(), args.evidence, args.key, args.bundle,
                                        _classes(params), _title(params), args.default_class)
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
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
    # without a product's class list (e.g. the DVC stage), the classes the labelers used, sorted
    info = build(studio.labeled_images(store), args.out or store.dataset_dir, classes=params.labels.classes or None,
                 goods=goods,
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


def cmd_retrain(args: argparse.Namespace) -> int:
    """The retrain check, once or on a schedule."""
    params = load(args)
    _classes(params)
    store = store_path(args)
    if args.cron:
        from flows.orchestration.scheduler import add_schedule

        spec = add_schedule("retrain-detector", "retrain", args.cron,
                            {"store": str(store.resolve()), "out": str(Path(args.out).resolve()),
                             "goods": str(Path(args.goods).resolve()) if args.goods else None})
        print(f"scheduled {spec.name}: retrain check at '{args.cron}' (UTC); see `lineguard scheduler status`")
        return 0
    from flows.detector.retrain import retrain_if_due

    r = retrain_if_due(store, args.out, params, goods=args.goods, force=args.force)
    if args.json:
        print(json.dumps(r, default=str))
    elif r["retrained"]:
        print(f"new detector {r['bundle']}: mAP50 {r['map50']:.3f} ({', '.join(r['due'])} due)")
    else:
        print("no retrain: " + "; ".join(f"{c}: {w}" for c, w in r["why"].items()))
    return 0


def register_demo(sub) -> None:
    """``lineguard loop demo``."""
    lp = sub.add_parser("loop", help="the hybrid loop end to end on MVTec AD bottle, timed")
    ls = lp.add_subparsers(dest="loop_command", required=True, metavar="action")
    d = ls.add_parser("demo", help="station -> review -> Label Studio -> labels -> retrain -> deploy -> check")
    d.add_argument("--bottle", help="MVTec AD bottle folder (default: data.dir of products/bottle.yaml)")
    d.add_argument("--work", default="loop-demo", help="working folder (its own label store and Label Studio data)")
    d.add_argument("--bundle", help="an anomaly bundle for bottle (default: enroll one)")
    d.add_argument("--ls-port", type=int, default=8081, help="Label Studio's port on 127.0.0.1")
    d.add_argument("--api-port", type=int, default=8091, help="the station API's port on 127.0.0.1 (the loop reviews and deploys over HTTP)")
    d.add_argument("--json", action="store_true", help="print the result as JSON")
    add_params_args(d)
    d.set_defaults(func=cmd_loop_demo)


def cmd_loop_demo(args: argparse.Namespace) -> int:
    """Run the whole loop and print the time of each step."""
    import os

    from flows.settings import project_root

    if not args.config:
        args.config = str(project_root() / "products" / "bottle.yaml")
    params = load(args)
    from flows.fleet.keys import ensure_key

    # the project's signing key, fixed before LINEGUARD_HOME moves to the demo's folder
    key = ensure_key(params.export.signing_key)
    params = params.model_copy(update={"export": params.export.model_copy(update={"signing_key": str(key)})})
    bottle = Path(args.bottle or params.data.dir)
    if not (bottle / "ground_truth").is_dir():
        raise ConfigError(f"{bottle}: not MVTec AD bottle (no ground_truth/); pass --bottle ../shared/data/mvtec_ad/bottle")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # the demo keeps its own label store and Label Studio data; Label Studio itself stays the project's install
    os.environ.setdefault("LINEGUARD_LABEL_STUDIO_VENV", str(project_root() / ".venv-labelstudio"))
    os.environ["LINEGUARD_HOME"] = str(work)
    from flows.orchestration.loop_run import run_loop, summary_lines, write

    r = run_loop(work, params, bottle=bottle.resolve(), port_ls=args.ls_port, port_api=args.api_port,
                 bundle=args.bundle)
    write(r, work / "loop.json")
    print(json.dumps(r, default=str) if args.json else "\n".join(summary_lines(r)))
    return 0
