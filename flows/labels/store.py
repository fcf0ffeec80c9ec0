"""The loop's label store on disk: decrypted part images, pulled annotations, the Label Studio project's state,
and what they add up to (examples per class, whether a retrain is due).

>>> store = LabelStore("data/labels"); counts(store)   # doctest: +SKIP
{'broken_large': 20, 'contamination': 21}
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from flows.labels.server import ServerInfo
from serving.errors import ConfigError


_PART_ID = re.compile(r"[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,64}/\d{1,12}")


def is_part_id(ext_id) -> bool:
    """True for a part id as stations write it: ``station/boot/seq`` (no ``__``, so keys never collide)."""
    return isinstance(ext_id, str) and bool(_PART_ID.fullmatch(ext_id)) and "__" not in ext_id and ".." not in ext_id


class LabelStore:
    """The loop's files: decrypted images, pulled annotations, and the state of the Label Studio project."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        for sub in ("images", "annotations"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.state_file = self.root / "state.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        for key, empty in (("tasks", {}), ("tombstones", []), ("queue", []), ("annotations", {})):
            self.state.setdefault(key, empty)

    @property
    def dataset_dir(self) -> Path:
        """Where the YOLO dataset of this store goes: ``yolo/`` beside it (``data/yolo``, the DVC stage's output)."""
        return self.root.parent / "yolo"

    def save(self) -> None:
        """Write the state atomically (a crash mid-write keeps the previous one)."""
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_file)

    @staticmethod
    def key(ext_id: str) -> str:
        """A file-name-safe key for a part id ``station/boot/seq`` (refuses anything else: task data in Label
        Studio can be edited by anyone with access, and must never name a file of its own choosing)."""
        if not is_part_id(ext_id):
            raise ConfigError(f"{ext_id!r} is not a part id (station/boot/seq)")
        return ext_id.replace("/", "__")

    def annotation(self, ext_id: str) -> dict | None:
        """The pulled annotation of one part, if any."""
        path = self.root / "annotations" / f"{self.key(ext_id)}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def annotations(self) -> list[dict]:
        """Every pulled annotation."""
        return [json.loads(p.read_text()) for p in sorted((self.root / "annotations").glob("*.json"))]


def _remove(store: LabelStore, ext_id: str) -> bool:
    """Take a part's annotation out of the dataset; the file is kept under ``removed/`` (nothing is lost)."""
    path = store.root / "annotations" / f"{store.key(ext_id)}.json"
    store.state["annotations"].pop(ext_id, None)
    if path.exists():
        trash = store.root / "removed"
        trash.mkdir(exist_ok=True)
        path.replace(trash / f"{path.stem}.{int(time.time())}.json")
        return True
    return False


def counts(store: LabelStore) -> dict[str, int]:
    """Labeled examples per class in the store: parts with at least one box of the class (not boxes: one part
    whose map pre-drew twenty boxes is one example)."""
    out: dict[str, int] = {}
    for a in store.annotations():
        for c in {b["class"] for b in a["boxes"]}:
            out[c] = out.get(c, 0) + 1
    return out


def labeled_images(store: LabelStore):
    """The store's annotations as the detector dataset's :class:`~flows.detector.dataset.LabeledImage`."""
    from flows.detector.dataset import LabeledImage

    return [LabeledImage(store.root / a["image"], [(b["class"], b["x0"], b["y0"], b["x1"], b["y1"]) for b in a["boxes"]],
                         a["ext_id"]) for a in store.annotations() if a["boxes"]]


def status(store: LabelStore, classes: list[str], min_per_class: int, info: ServerInfo | None = None) -> dict:
    """Per class: labeled examples, how many the deployed detector was trained on, whether a retrain is due and
    why not; the queue and Label Studio's reachability."""
    have = counts(store)
    trained = store.state.get("trained_on", {})
    per_class, due = {}, []
    for c in classes:
        new = have.get(c, 0) - trained.get(c, 0)
        ok = new >= min_per_class
        per_class[c] = {"examples": have.get(c, 0), "trained_on": trained.get(c, 0), "new": new,
                        "retrain": ok, "why": "due" if ok else f"{new} new example(s), {min_per_class} needed"}
        if ok:
            due.append(c)
    out = {"classes": per_class, "retrain_due": due, "queued": len(store.state["queue"]),
           "pushed": len(store.state["tasks"]), "deleted_in_label_studio": len(store.state["tombstones"]),
           "last_error": store.state.get("last_error"), "unreachable_since": store.state.get("unreachable_since")}
    if info is not None:
        from flows.labels.server import healthy

        out["label_studio"] = {"url": info.url, "healthy": healthy(info.url)}
    return out
