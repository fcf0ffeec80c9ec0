"""Confirmed defects to Label Studio and labelers' boxes back: idempotent push and pull, and a persistent queue.

**Push.** Parts an operator confirmed as defects (from the evidence the stations synced) become tasks
(:mod:`flows.labels.tasks`: pre-annotated boxes, the picture of why the station rejected the part) in a project
whose rectangle labels are the product's classes. A re-push finds tasks by the part's identity and creates no
duplicates. When Label Studio cannot be reached the tasks stay in a queue on disk, retried at every push, and
the store's state says since when it has been unreachable.

**Pull.** The newest submitted annotation of each task becomes ``annotations/<id>.json`` (boxes in image
pixels). Edited annotations replace theirs; a task deleted in Label Studio, or whose annotations were
all deleted, loses its file (and a deleted task is not pushed again); boxes with an unknown class or
no area are reported and left out. Pulling twice changes nothing.

>>> store = LabelStore("data/labels"); push(store, defect_tasks(...), connection(), "lineguard-bottle", classes)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flows.labels.server import ServerInfo
from flows.labels.store import (LabelStore, _remove, counts, is_part_id,  # noqa: F401 - the store's API, here too
                                 labeled_images, status)
from flows.labels.tasks import EXPLAIN_NAME, FROM_NAME, TO_NAME, defect_tasks
from serving.errors import ConfigError, LineguardError


class LabelStudioUnreachable(LineguardError):
    """Label Studio did not answer; the work is queued, not lost."""


def label_config(classes: list[str]) -> str:
    """A rectangle-labeling project for ``classes``."""
    labels = "".join(f'<Label value="{c}"/>' for c in classes)
    return (f'<View><Image name="{TO_NAME}" value="$image"/>'
            f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels>'
            '<Header value="Why the station rejected it: heatmap | nearest normal | the normal patches it was '
            'compared with"/>'
            f'<Image name="{EXPLAIN_NAME}" value="${EXPLAIN_NAME}"/></View>')


@dataclass
class PushResult:
    """What a push did."""

    pushed: int = 0
    already_there: int = 0
    queued: int = 0
    skipped: list[str] = field(default_factory=list)
    project_id: int | None = None


@dataclass
class PullResult:
    """What a pull changed."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    deleted_tasks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def client(info: ServerInfo):
    """A Label Studio SDK client that fails fast (the queue retries, not the SDK)."""
    from label_studio_sdk.client import LabelStudio

    return LabelStudio(base_url=info.url, api_key=info.token, timeout=15, max_retries=0)


def _call(info: ServerInfo, fn):
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn()
    except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
        raise LabelStudioUnreachable(f"Label Studio at {info.url} is not reachable ({type(exc).__name__}); "
                                     "start it with `lineguard labels server start`") from None
    except ApiError as exc:
        if exc.status_code == 401:
            raise ConfigError(f"Label Studio at {info.url} refused the API token (401); set LABEL_STUDIO_API_KEY or "
                              "restart the project's server") from None
        raise


def ensure_project(ls, store: LabelStore, title: str, classes: list[str], files_root: Path) -> int:
    """The project for ``title`` with ``classes`` as labels and Local Files storage over the store's images."""
    config = label_config(classes)
    pid = store.state.get("project_id")
    project = None
    if pid is not None:
        try:
            project = ls.projects.get(pid)
        except Exception:  # noqa: BLE001 - deleted in Label Studio: find or make another
            project = None
    if project is None:
        project = next((p for p in ls.projects.list(title=title) if p.title == title), None)
    if project is None:
        project = ls.projects.create(title=title, label_config=config, show_collab_predictions=True,
                                     description="Parts confirmed as defects at Lineguard stations")
    elif project.label_config != config:
        ls.projects.update(project.id, label_config=config)
    ident = _identity(project)
    if project.id != store.state.get("project_id") or ident != store.state.get("project_identity"):
        # a new project (or the same id after Label Studio was wiped): the old task ids mean nothing here
        store.state.update(project_id=project.id, project_identity=ident, tasks={}, annotations={})
    images = (store.root / "images").resolve()
    if not images.is_relative_to(files_root.resolve()):
        raise ConfigError(f"label store {store.root} is outside Label Studio's Local Files root {files_root}; "
                          "keep the store under it (the project's server serves data/labels)")
    if not any(s.path == str(images) for s in ls.import_storage.local.list(project=project.id)):
        ls.import_storage.local.create(project=project.id, path=str(images), title="lineguard evidence",
                                       regex_filter=r".*\.png", use_blob_urls=True)
    return project.id


def _identity(project) -> str:
    """A project's id with its creation time: Label Studio reuses ids after its database is wiped."""
    return f"{project.id}@{project.created_at}"


def _live_tasks(ls, pid: int) -> dict[str, dict]:
    """ext_id -> task (annotations inline) of every task in the project whose ext_id is a part id."""
    return {t.data.get("ext_id"): t for t in ls.tasks.list(project=pid, fields="all") if is_part_id(t.data.get("ext_id"))}


def push(store: LabelStore, tasks: list[dict], info: ServerInfo, title: str, classes: list[str]) -> PushResult:
    """Queue ``tasks`` and push the whole queue; on a connection failure everything stays queued."""
    result = PushResult()
    store.state["queue"].extend(tasks)
    store.save()
    if not store.state["queue"]:
        return result
    ls = client(info)
    try:
        def do():
            pid = ensure_project(ls, store, title, classes, Path(info.files_root))
            live = _live_tasks(ls, pid)
            todo = []
            for t in store.state["queue"]:
                t["data"].setdefault(EXPLAIN_NAME, "")  # queued before tasks carried it; the config asks for it
                ext = t["data"]["ext_id"]
                if ext in live:  # pushed before (or by another run): no duplicate
                    store.state["tasks"][ext] = live[ext].id
                    result.already_there += 1
                else:
                    todo.append(t)
            if todo:
                r = ls.projects.import_tasks(pid, request=todo, return_task_ids=True)
                for t, tid in zip(todo, r.task_ids):
                    store.state["tasks"][t["data"]["ext_id"]] = tid
                result.pushed = len(todo)
            result.project_id = pid

        _call(info, do)
    except LabelStudioUnreachable as exc:
        store.state.setdefault("unreachable_since", time.time())
        store.state["last_error"] = str(exc)
        result.queued = len(store.state["queue"])
        store.save()
        raise LabelStudioUnreachable(f"{exc}; {result.queued} task(s) queued in {store.state_file}, pushed on the "
                                     "next run") from None
    store.state["queue"] = []
    store.state.pop("unreachable_since", None)
    store.state.pop("last_error", None)
    store.state["last_push"] = time.time()
    store.save()
    return result


def push_confirmed(store: LabelStore, info: ServerInfo, evidence: str, key_file: str | Path, bundle: str | Path,
                   classes: list[str], title: str, default_class: str | None = None) -> tuple[PushResult, list[str]]:
    """Follow the project first (a deleted or recreated one gets every confirmed part again), then push the
    parts confirmed as defects that Label Studio does not have yet; returns the push and the parts left out."""
    try:
        _call(info, lambda: ensure_project(client(info), store, title, classes, Path(info.files_root)))
        store.save()
    except LabelStudioUnreachable:
        pass  # the tasks are collected and queued all the same
    tasks, problems = defect_tasks(evidence, key_file, bundle, store, classes, info.files_root, default_class)
    return push(store, tasks, info, title, classes), problems


def _time(value) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _boxes(annotation: dict, classes: list[str], ext_id: str, problems: list[str]) -> list[dict]:
    out = []
    for region in annotation.get("result", []):
        if region.get("type") != "rectanglelabels":
            continue
        v, w, h = region["value"], region.get("original_width"), region.get("original_height")
        labels = v.get("rectanglelabels") or []
        cls = labels[0] if labels else None
        if cls not in classes:
            problems.append(f"{ext_id}: box with class {cls!r}, not one of {classes}: left out (add the class to "
                            "labels.classes, or fix the label in Label Studio)")
            continue
        if not w or not h:
            problems.append(f"{ext_id}: box without the image size: left out")
            continue
        bw, bh = v.get("width", 0) * w / 100, v.get("height", 0) * h / 100
        if bw < 1 or bh < 1:
            problems.append(f"{ext_id}: {cls} box of {bw:.1f} x {bh:.1f} px has no area: left out")
            continue
        x, y = v.get("x", 0) * w / 100, v.get("y", 0) * h / 100
        # Label Studio rotates a box about its (x, y) corner: keep the axis-aligned box around the turned one
        a = math.radians(v.get("rotation") or 0.0)
        cx = [x + dx * math.cos(a) - dy * math.sin(a) for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
        cy = [y + dx * math.sin(a) + dy * math.cos(a) for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
        x0, y0 = max(0.0, min(cx)), max(0.0, min(cy))
        x1, y1 = min(float(w), max(cx)), min(float(h), max(cy))
        if x1 - x0 < 1 or y1 - y0 < 1:
            problems.append(f"{ext_id}: {cls} box lies outside the picture: left out")
            continue
        out.append({"class": cls, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "width": w, "height": h})
    return out


def pull(store: LabelStore, info: ServerInfo, classes: list[str]) -> PullResult:
    """Bring the newest submitted annotation of every task into the store; reflect edits and deletions."""
    result = PullResult()
    pid = store.state.get("project_id")
    if pid is None:
        return result
    ls = client(info)

    def project_and_tasks():
        from label_studio_sdk.core.api_error import ApiError

        try:
            project = ls.projects.get(pid)
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            project = None
        return project, (_live_tasks(ls, pid) if project is not None else {})

    project, live = _call(info, project_and_tasks)
    if project is None or _identity(project) != store.state.get("project_identity", _identity(project)):
        # deleted or recreated (a wiped Label Studio reuses ids): its missing tasks are not deletions by labelers
        raise ConfigError(f"the Label Studio project {pid} this store pushed to is gone or was recreated; nothing was "
                          "removed here. Run `lineguard labels push` to re-create its tasks, then pull again")
    store.state.setdefault("project_identity", _identity(project))
    gone = [e for e in store.state["tasks"] if e not in live]
    if len(gone) > max(3, len(store.state["tasks"]) // 2):
        raise ConfigError(f"{len(gone)} of {len(store.state['tasks'])} pushed tasks are missing in Label Studio "
                          f"project {pid}; that looks like a restore or a wrong project, not labelers' deletions. "
                          "Nothing was removed; check the project, or delete tasks in smaller batches")
    for ext_id in list(store.state["tasks"]):
        if ext_id not in live:  # deleted in Label Studio: not pushed again, not trained on
            store.state["tasks"].pop(ext_id)
            store.state["tombstones"].append(ext_id)
            result.deleted_tasks.append(ext_id)
            if _remove(store, ext_id):
                result.removed += 1
    for ext_id, task in live.items():
        store.state["tasks"][ext_id] = task.id
        anns = [a for a in (task.annotations or []) if not a.get("was_cancelled")]
        if not anns:
            if ext_id in store.state["annotations"] and _remove(store, ext_id):  # one pulled from this project
                result.removed += 1
            continue
        ann = max(anns, key=lambda a: _time(a.get("updated_at") or a.get("created_at")))
        stamp = f"{ann['id']}@{_time(ann.get('updated_at') or ann.get('created_at'))}"
        if store.state["annotations"].get(ext_id) == stamp and store.annotation(ext_id) is not None:
            result.unchanged += 1
            continue
        boxes = _boxes(ann, classes, ext_id, result.problems)
        record = {"ext_id": ext_id, "image": f"images/{store.key(ext_id)}.png", "boxes": boxes, "annotation_id": ann["id"], "task_id": task.id,
                  "updated_at": ann.get("updated_at"), "completed_by": ann.get("completed_by")}
        new = store.annotation(ext_id) is None
        (store.root / "annotations" / f"{store.key(ext_id)}.json").write_text(json.dumps(record, indent=1))
        store.state["annotations"][ext_id] = stamp
        result.new += new
        result.updated += not new
    store.state["last_pull"] = time.time()
    store.save()
    return result
