"""The whole hybrid loop on MVTec AD bottle, timed step by step: what ``lineguard loop demo``, its test and the
loop benchmark run.

1. enroll: an anomaly bundle from good bottles;
2. station: a replay station inspects the defective bottles and syncs its evidence;
3. review: the operator confirms each flagged part with a class, through the station's API;
4. push: confirmed defects go to the project's Label Studio as pre-annotated tasks;
5. label: a labeler corrects each box and class (through the API the labeling page uses: the reference box
   from the part's mask stands for what a person would draw);
6. pull: annotations come back into the label store;
7. retrain: the classes with 20+ new examples trigger a detector (dataset with copy-paste, YOLO, ONNX);
8. deploy: the detector bundle is loaded on a running station through its API (engineer);
9. check: held-out defects the detector never saw are replayed; the station names their class.

>>> r = run_loop(Path("/tmp/loop"), params)   # doctest: +SKIP
>>> r["steps"]["retrain"], r["named"]           # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from flows.params import Params
from serving.errors import ConfigError

HELD_OUT = {"broken_large": 2, "contamination": 1}  #: defects kept away from labels and training for the check


def _station_config(work: Path, bundle: Path, images: Path, classes: list[str], port: int, trusted_key: str | None,
                    **extra) -> "object":
    from serving.cli import hash_password
    from serving.config import parse_config
    from serving.evidence.crypto import generate_key

    key = work / "evidence.key"
    if not key.exists():
        generate_key(key)
    return parse_config({
        "station_id": "bottle-line", "bundle": str(bundle), "classes": classes, **extra,
        "bundles": {"trusted_keys": [trusted_key] if trusted_key else [], "allow_unsigned": trusted_key is None,
                    "store": str(work / "bundles")},
        "source": {"kind": "replay", "path": str(images), "rate_hz": 4},
        "gate": {"min_area_px": 0, "deadline_ms": 2000},
        "actuator": {"kind": "none", "delay_ms": 2100, "pulse_ms": 20},
        # full-resolution pictures: they are what the labelers draw on and the detector learns from
        "evidence": {"dir": str(work / "evidence"), "key_file": str(key), "pass_sample_rate": 1.0, "image_max_px": 1024,
                     "sync_url": str(work / "sync"), "sync_interval_s": 0.5},
        "api": {"port": port, "users": {"olga": {"role": "operator", "password_hash": hash_password("op-pass", 1000)},
                                        "eddie": {"role": "engineer", "password_hash": hash_password("eng-pass", 1000)}},
                "audit_log": str(work / "audit.jsonl"), "device_keys": str(work / "device-keys.json")}})


def _trusted(params: Params) -> str | None:
    """The public half of the key the loop's bundles are signed with (None: unsigned, allowed for the demo)."""
    from flows.fleet.keys import key_path

    key = key_path(params.export.signing_key)
    return str(key.with_suffix(".pub")) if key is not None and key.exists() else None


class _Http:
    """The station's HTTP API as a browser or an engineer's tool reaches it: JSON over 127.0.0.1."""

    def __init__(self, port: int):
        self.base, self.token = f"http://127.0.0.1:{port}", None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, method=method, data=None if body is None else
                                     json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, {"detail": e.read().decode(errors="replace")}

    def login(self, user: str, pw: str) -> "_Http":
        code, body = self.call("POST", "/api/login", {"username": user, "password": pw})
        if code != 200:
            raise ConfigError(f"login as {user} refused by the station: {body}")
        self.token = body["token"]
        return self


def _split(bottle: Path, classes: list[str], work: Path) -> tuple[Path, Path, dict]:
    """Defects to label (a replay folder) and held-out defects (another), named <class>__<stem>.png."""
    label, held = work / "stream-label", work / "stream-held-out"
    for d in (label, held):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    truth = {}
    for c in classes:
        files = sorted((bottle / "test" / c).glob("*.png"))
        for i, f in enumerate(files):
            name = f"{c}__{f.stem}.png"
            (held if i < HELD_OUT.get(c, 0) else label).joinpath(name).symlink_to(f)
            truth[name] = (c, bottle / "ground_truth" / c / f"{f.stem}_mask.png")
    return label, held, truth


def run_loop(work: str | Path, params: Params, *, bottle: str | Path, port_ls: int, port_api: int,
             bundle: str | Path | None = None) -> dict:
    """Run the loop in ``work``; return the time of each step, the detector's figures and what the station named."""
    from flows.detector.retrain import retrain_if_due
    from flows.labels import server, studio
    from serving.cli import serve_api
    from serving.station.runtime import Station

    work, bottle = Path(work), Path(bottle)
    classes = params.labels.classes
    if not classes:
        raise ConfigError("the loop needs labels.classes (products/bottle.yaml lists the bottle's)")
    steps, t = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round(now - t, 1)
        t = now
        print(f"loop: {name} done in {steps[name]:.1f} s", flush=True)

    if bundle is None:
        from flows.anomaly.enroll import enroll
        from flows.anomaly.export import export_bundle

        bundle = work / "anomaly"
        enroll(bottle, params, bundle, progress=False)
        export_bundle(bundle, params.export)
    lap("enroll")

    label_dir, held_dir, truth = _split(bottle, classes, work)
    pub = _trusted(params)
    st = Station(_station_config(work, Path(bundle), label_dir, classes, port_api, pub)).start()
    assert st.wait(600)
    lap("station")

    api = serve_api(st, "127.0.0.1", port_api)
    http = _Http(port_api).login("olga", "op-pass")
    reviewed = _review(st, http, truth)
    time.sleep(1.5)  # the housekeeper syncs the dispositions
    st.stop()
    api.should_exit = True
    lap("review")

    info = server.start(port_ls)
    ls_info = server.connection()
    store = studio.LabelStore(Path(info["files_root"]) / "labels")
    title = params.labels.project.format(product=params.product)
    pushed, problems = studio.push_confirmed(store, ls_info, str(work / "sync"), work / "evidence.key", bundle,
                                             classes, title)
    lap("push")

    _label(studio.client(ls_info), store.state["project_id"], work / "sync", truth)
    lap("label")

    pulled = studio.pull(store, ls_info, classes)
    server.stop()
    lap("pull")

    status = studio.status(store, classes, params.labels.min_per_class)
    trained = retrain_if_due(store.root, work / "detector", params, goods=bottle / "train" / "good")
    if not trained["retrained"]:
        raise ConfigError(f"no class reached {params.labels.min_per_class} examples: {trained['why']}")
    lap("retrain")

    (work / "after").mkdir(exist_ok=True)
    st2 = Station(_station_config(work / "after", Path(bundle), held_dir, classes, port_api, pub))
    api = serve_api(st2, "127.0.0.1", port_api)
    code, body = _Http(port_api).login("eddie", "eng-pass").call("POST", "/api/bundle", {"path": trained["bundle"]})
    if code != 200:
        raise ConfigError(f"the station refused the detector: {body}")
    lap("deploy")

    st2.start()
    assert st2.wait(120)
    api.should_exit = True
    named = {Path(x.source).name: {"verdict": x.verdict, "rule": x.rule, "class": x.class_name,
                                   "detections": [d.model_dump() for d in x.detections]}
             for x in st2.evidence.query(limit=100, order="id")}
    st2.stop()
    lap("check")
    return {"steps": steps, "total_s": round(sum(steps.values()), 1), "reviewed": reviewed, "pushed": pushed.pushed,
            "push_problems": problems, "pulled": pulled.new, "status": status["classes"], "detector": {
                k: trained[k] for k in ("bundle", "map50", "per_class", "precision", "recall", "n_train", "n_val",
                                        "seconds")},
            "named": named, "truth": {k: truth[k][0] for k in named}}


def _review(st, http: "_Http", truth: dict) -> int:
    """The operator's part: every kept part confirmed a defect of the class seen on it, through the station's API."""
    reviewed = 0
    for r in st.evidence.query("crop_file IS NOT NULL", limit=10_000, order="id"):
        cls = truth[Path(r.source).name][0]  # what the operator sees on the part and taps
        code, body = http.call("POST", f"/api/review/{r.id}", {"disposition": "defect", "class_name": cls})
        if code != 200:
            raise ConfigError(f"review of part {r.id} refused: {body}")
        reviewed += 1
    return reviewed


def _label(ls, project_id: int, sync_dir: Path, truth: dict) -> None:
    """The labeller's part: each pushed task's pre-drawn box replaced by boxes around the true defect mask,
    submitted through Label Studio's API as a person's annotation of the prediction."""
    from flows.data.evidence import load_records
    from flows.detector.dataset import mask_boxes
    from flows.labels import studio
    from serving.images import read_mask

    by_ext = {f"{r.station_id}/{r.boot_id}/{r.seq}": Path(r.source).name
              for r in load_records(str(sync_dir)).itertuples()}
    for task in ls.tasks.list(project=project_id, fields="all"):
        cls, mask_path = truth[by_ext[task.data["ext_id"]]]
        mask = read_mask(mask_path).astype(np.uint8)
        mh, mw = mask.shape
        pred = task.predictions[0] if isinstance(task.predictions[0], dict) else task.predictions[0].model_dump()
        w_, h_ = pred["result"][0]["original_width"], pred["result"][0]["original_height"]  # the picture's own size
        result = [{"id": f"r{i}", "from_name": studio.FROM_NAME, "to_name": studio.TO_NAME, "type": "rectanglelabels",
                   "original_width": w_, "original_height": h_, "image_rotation": 0, "origin": "prediction-changed",
                   "value": {"x": 100 * x0 / mw, "y": 100 * y0 / mh, "width": 100 * (x1 - x0) / mw,
                             "height": 100 * (y1 - y0) / mh, "rotation": 0, "rectanglelabels": [cls]}}
                  for i, (x0, y0, x1, y1) in enumerate(mask_boxes(mask))]
        ls.annotations.create(id=task.id, result=result, lead_time=10.0, was_cancelled=False, ground_truth=False,
                              project=task.project, parent_prediction=pred["id"])


def summary_lines(r: dict) -> list[str]:
    """The loop's result for a person."""
    lines = [f"{name:<8} {s:7.1f} s" for name, s in r["steps"].items()] + [f"{'total':<8} {r['total_s']:7.1f} s"]
    d = r["detector"]
    lines.append(f"detector mAP50 {d['map50']:.3f} on {d['n_val']} held-out labeled parts "
                 f"({', '.join(f'{k} {v:.2f}' for k, v in d['per_class'].items())})")
    for name, v in r["named"].items():
        lines.append(f"held-out {name}: {v['verdict']} by {v['rule']}, class {v['class']} (truth {r['truth'][name]})")
    return lines


def write(r: dict, path: str | Path) -> None:
    """Save the result as JSON."""
    Path(path).write_text(json.dumps(r, indent=1, default=str))
