"""Confirmed defects to a real Label Studio and back: pre-annotated tasks, a labeler's corrections through the API the
web page uses, idempotent pulls, deletions, bad annotations, and a Label Studio that is down."""

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from flows.cli import main as lineguard
from helpers import ROOT, station_config
from serving.api import create_app
from serving.station.runtime import Station
from services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]
CLASSES = ["crack", "finger"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A project home of its own (label store, Label Studio data) with the real Label Studio running."""
    home = tmp_path_factory.mktemp("labels-home")
    env = {"LINEGUARD_HOME": str(home), "LINEGUARD_LABEL_STUDIO_VENV": str(ROOT / ".venv-labelstudio")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from flows.labels import server

    port = free_port()
    try:
        info = server.start(port)
        yield home, info
        assert server.stop()
        assert not server.healthy(f"http://127.0.0.1:{port}")
    finally:
        server.stop()  # also when start() failed half-way: no server left behind
        for k, v in old.items():  # the other tests must not inherit this home
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def synced(tmp_path_factory, bundle_dir):
    """A station inspected the test cells; the operator confirmed every FAIL as a defect with a class; synced."""
    tmp = tmp_path_factory.mktemp("st")
    images = bundle_dir.parent / (bundle_dir.name + "-images")
    sync = tmp / "sync"
    cfg = station_config(tmp, bundle_dir, images, source={"kind": "replay", "path": str(images), "rate_hz": 5},
                         evidence={"sync_url": str(sync), "sync_interval_s": 0.3})
    st = Station(cfg).start()
    assert st.wait(60)
    client = TestClient(create_app(st))
    h = {"Authorization": "Bearer " + client.post("/api/login", json={"username": "olga", "password": "op-pass"}).json()["token"]}
    fails = st.evidence.query("verdict='FAIL' AND crop_file IS NOT NULL", limit=100, order="id")
    assert len(fails) >= 3
    for i, r in enumerate(fails):
        assert client.post(f"/api/review/{r.id}", json={"disposition": "defect", "class_name": CLASSES[i % 2]},
                           headers=h).status_code == 200
    time.sleep(1.5)  # the housekeeper syncs the dispositions
    st.stop()
    return sync, cfg.evidence.key_file, len(fails)


def cli(*args, capsys=None):
    code = lineguard([*args, f"labels.classes=[{','.join(CLASSES)}]", "product=elpv-test"])
    return code, (capsys.readouterr() if capsys else None)


def pred(task) -> dict:
    """A task's first prediction as the dict the API sends (the SDK wraps it in a model)."""
    p = task.predictions[0]
    return p if isinstance(p, dict) else p.model_dump()


def ls_client(info):
    from label_studio_sdk.client import LabelStudio

    return LabelStudio(base_url=info["url"], api_key=info["token"], max_retries=0)


def test_push_pre_annotates_and_a_re_push_makes_no_duplicate(home, synced, bundle_dir, capsys):
    sync, key, n = synced
    args = ("labels", "push", "--evidence", str(sync), "--key", str(key), "--bundle", str(bundle_dir), "--json")
    code, out = cli(*args, capsys=capsys)
    assert code == 0, out.err
    assert json.loads(out.out.strip().splitlines()[-1])["pushed"] == n
    ls = ls_client(home[1])
    project = next(p for p in ls.projects.list() if p.title == "lineguard-elpv-test")
    assert all(f'value="{c}"' in project.label_config for c in CLASSES)
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == n
    first = pred(tasks[0])
    region = first["result"][0]
    assert region["type"] == "rectanglelabels" and region["value"]["rectanglelabels"][0] in CLASSES
    assert 0 < region["value"]["width"] <= 100 and first["score"] > 0
    req = urllib.request.Request(home[1]["url"] + tasks[0].data["image"], headers={"Authorization": f"Token {home[1]['token']}"})
    with urllib.request.urlopen(req) as r:  # the image is served by Local Files storage
        assert r.read(8) == b"\x89PNG\r\n\x1a\n"
    code, out = cli(*args, capsys=capsys)
    assert code == 0 and json.loads(out.out.strip().splitlines()[-1])["pushed"] == 0
    assert len(list(ls.tasks.list(project=project.id, fields="task_only"))) == n


def test_each_task_shows_why_the_station_rejected_the_part(home, synced, bundle_dir, capsys):
    """The task carries the station's own explanation picture (heatmap | nearest normal | 3 normal patches) as a
    second image the labeler sees; the rectangle labels stay on the part's picture."""
    from flows.data.evidence import load_records
    from serving.evidence.crypto import ImageVault, load_key

    sync, key, _ = synced
    code, out = cli("labels", "push", "--evidence", str(sync), "--key", str(key), "--bundle", str(bundle_dir), "--json",
                    capsys=capsys)
    assert code == 0, out.err
    ls = ls_client(home[1])
    project = next(p for p in ls.projects.list() if p.title == "lineguard-elpv-test")
    assert '<Image name="explain" value="$explain"/>' in project.label_config
    assert 'toName="image"' in project.label_config  # the boxes are still drawn on the part
    records = load_records(str(sync))
    vault = ImageVault(load_key(key), "test-line", Path("."))
    from_station = 0
    for task in ls.tasks.list(project=project.id, fields="all"):
        station, boot, seq = task.data["ext_id"].split("/")
        rec = records[(records["boot_id"] == boot) & (records["seq"] == int(seq))].iloc[0]
        req = urllib.request.Request(home[1]["url"] + task.data["explain"],
                                     headers={"Authorization": f"Token {home[1]['token']}"})
        with urllib.request.urlopen(req) as r:  # served by the same Local Files storage as the part
            served = r.read()
        assert served[:3] == b"\xff\xd8\xff"  # a JPEG
        if isinstance(rec.get("explain_file"), str):  # the station explained it: that very picture
            name = rec["explain_file"]
            assert served == vault.decrypt(name, (sync / station / "images" / name).read_bytes())
            assert task.meta["explain"] == "station"
            from_station += 1
        else:  # a fail-safe reject has no map of its own at the station: made at push from the bundle
            assert task.meta["explain"].startswith("push: ")
    assert from_station >= 1


def _submit(ls, task, result):
    """What the labeling page does on Submit: POST /api/tasks/:id/annotations with the edited regions."""
    return ls.annotations.create(id=task.id, result=result, lead_time=8.0, was_cancelled=False, ground_truth=False,
                                 project=task.project, parent_prediction=pred(task)["id"])


def test_labeler_corrections_come_back_and_pulls_are_idempotent(home, synced, bundle_dir, capsys):
    ls = ls_client(home[1])
    project = next(p for p in ls.projects.list() if p.title == "lineguard-elpv-test")
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    moved = dict(pred(tasks[0])["result"][0])
    moved["value"] = {**moved["value"], "x": 10.0, "y": 20.0, "width": 30.0, "height": 25.0, "rectanglelabels": ["finger"]}
    moved["origin"] = "prediction-changed"
    ann = _submit(ls, tasks[0], [moved])
    for t in tasks[1:]:
        _submit(ls, t, pred(t)["result"])
    code, out = cli("labels", "pull", "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out.out.strip().splitlines()[-1])["new"] == len(tasks)
    store = home[0] / "data" / "labels"
    ext = tasks[0].data["ext_id"]
    rec = json.loads((store / "annotations" / f"{ext.replace('/', '__')}.json").read_text())
    w, h = moved["original_width"], moved["original_height"]
    assert rec["boxes"][0]["class"] == "finger"
    assert rec["boxes"][0]["x0"] == pytest.approx(0.10 * w) and rec["boxes"][0]["y1"] == pytest.approx(0.45 * h)
    code, out = cli("labels", "pull", "--json", capsys=capsys)
    again = json.loads(out.out.strip().splitlines()[-1])
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 0, len(tasks))
    edited = {**moved, "value": {**moved["value"], "rectanglelabels": ["crack"]}}
    time.sleep(1.1)
    ls.annotations.update(id=ann.id, result=[edited])
    code, out = cli("labels", "pull", "--json", capsys=capsys)
    assert json.loads(out.out.strip().splitlines()[-1])["updated"] == 1
    assert json.loads((store / "annotations" / f"{ext.replace('/', '__')}.json").read_text())["boxes"][0]["class"] == "crack"
    code, out = cli("labels", "status", "--json", capsys=capsys)
    s = json.loads(out.out.strip().splitlines()[-1])
    assert sum(v["examples"] for v in s["classes"].values()) >= len(tasks)
    assert s["retrain_due"] == [] and "20 needed" in s["classes"]["crack"]["why"]  # too few to retrain: says why


def test_the_pulled_labels_become_a_dvc_versioned_yolo_dataset(home, synced, tmp_path):
    """The DVC stage of pipelines/loop/dvc.yaml on the store the pulls filled: a YOLO dataset, then cached."""
    import shutil
    import subprocess
    import sys

    store = home[0] / "data" / "labels"
    if not any((store / "annotations").glob("*.json")):
        pytest.skip("needs the annotations the pull test stored")
    proj = tmp_path / "proj"
    (proj / "pipelines" / "loop").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / "loop" / "dvc.yaml", proj / "pipelines" / "loop" / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", proj / "params.yaml")
    shutil.copytree(ROOT / "flows" / "detector", proj / "flows" / "detector")
    shutil.copytree(store, proj / "data" / "labels")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "LINEGUARD_HOME": str(proj)}

    def run(*cmd):
        return subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, check=True).stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    assert "Running stage 'pipelines/loop/dvc.yaml:labels-dataset'" in run("dvc", "repro", "pipelines/loop/dvc.yaml")
    data = yaml.safe_load((proj / "data" / "yolo" / "data.yaml").read_text())
    assert set(data["names"].values() if isinstance(data["names"], dict) else data["names"]) <= set(CLASSES)
    assert any((proj / "data" / "yolo" / "train" / "labels").glob("*.txt"))
    assert "data/yolo" in (proj / "pipelines" / "loop" / "dvc.lock").read_text()
    assert "Running stage" not in run("dvc", "repro", "pipelines/loop/dvc.yaml")


def test_deletions_and_bad_boxes_in_label_studio(home, synced, bundle_dir, capsys):
    sync, key, n = synced
    ls = ls_client(home[1])
    project = next(p for p in ls.projects.list() if p.title == "lineguard-elpv-test")
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
    gone = tasks[-1]
    ls.tasks.delete(str(gone.id))
    bad = dict(pred(tasks[1])["result"][0])
    unknown = {**bad, "id": "u1", "value": {**bad["value"], "rectanglelabels": ["scratch"]}}
    flat = {**bad, "id": "f1", "value": {**bad["value"], "width": 0.0}}
    _submit(ls, tasks[1], [unknown, flat])
    code, out = cli("labels", "pull", "--json", capsys=capsys)
    r = json.loads(out.out.strip().splitlines()[-1])
    assert r["deleted_tasks"] == [gone.data["ext_id"]] and r["removed"] >= 1
    assert "'scratch', not one of" in out.err and "has no area" in out.err
    store = home[0] / "data" / "labels"
    assert not (store / "annotations" / f"{gone.data['ext_id'].replace('/', '__')}.json").exists()
    assert list((store / "removed").glob(f"{gone.data['ext_id'].replace('/', '__')}.*.json"))  # kept, not lost
    code, out = cli("labels", "push", "--evidence", str(sync), "--key", str(key), "--bundle", str(bundle_dir), "--json",
                    capsys=capsys)
    assert json.loads(out.out.strip().splitlines()[-1])["pushed"] == 0  # a task deleted in Label Studio stays deleted


def test_label_studio_down_queues_the_push_and_retries(home, synced, bundle_dir, tmp_path, capsys, monkeypatch):
    sync, key, n = synced
    store = home[0] / "data" / "labels-queue"  # under the server's Local Files root, like the project's own store
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", home[1]["token"])
    monkeypatch.setenv("LABEL_STUDIO_FILES_ROOT", str(home[0] / "data"))
    args = ("labels", "push", "--store", str(store), "--evidence", str(sync), "--key", str(key), "--bundle",
            str(bundle_dir), "labels.project=lineguard-queue-test")
    code, out = cli(*args, capsys=capsys)
    assert code == 2 and "not reachable" in out.err and f"{n} task(s) queued" in out.err
    state = json.loads((store / "state.json").read_text())
    assert len(state["queue"]) == n and state["unreachable_since"]
    code, out = cli("labels", "status", "--store", str(store), "--json", capsys=capsys)
    s = json.loads(out.out.strip().splitlines()[-1])
    assert s["queued"] == n and "not reachable" in s["last_error"] and s["label_studio"]["healthy"] is False
    monkeypatch.setenv("LABEL_STUDIO_URL", home[1]["url"])
    code, out = cli(*args, capsys=capsys)  # back up: the queue goes out, nothing lost, nothing doubled
    assert code == 0 and json.loads((store / "state.json").read_text())["queue"] == []
    ls = ls_client(home[1])
    project = next(p for p in ls.projects.list() if p.title == "lineguard-queue-test")
    assert len(list(ls.tasks.list(project=project.id, fields="task_only"))) == n


def test_a_project_deleted_in_label_studio_removes_no_local_label(home, synced, bundle_dir, capsys):
    """A wiped or deleted project is not a labeler deleting every task: the pull refuses and keeps the labels;
    a push re-creates the tasks and the next pull keeps the labels those new tasks have not been given yet."""
    sync, key, n = synced
    store = home[0] / "data" / "labels"
    before = sorted(p.name for p in (store / "annotations").glob("*.json"))
    assert before
    ls = ls_client(home[1])
    project = next(p for p in ls.projects.list() if p.title == "lineguard-elpv-test")
    ls.projects.delete(project.id)
    code, out = cli("labels", "pull", capsys=capsys)
    assert code == 2 and "is gone or was recreated; nothing was removed here" in out.err
    assert sorted(p.name for p in (store / "annotations").glob("*.json")) == before
    code, out = cli("labels", "push", "--evidence", str(sync), "--key", str(key), "--bundle", str(bundle_dir), "--json",
                    capsys=capsys)
    assert code == 0 and json.loads(out.out.strip().splitlines()[-1])["project_id"] != project.id
    code, out = cli("labels", "pull", "--json", capsys=capsys)
    assert code == 0 and json.loads(out.out.strip().splitlines()[-1])["removed"] == 0
    assert sorted(p.name for p in (store / "annotations").glob("*.json")) == before
