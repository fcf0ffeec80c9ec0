"""The station's own store of bundle versions: uploads land here, the last N stay for rollback.

Layout under ``bundles.store``::

    anomaly/<bundle_version>/...      one verified copy of each version (only the manifest's files)
    detector/<bundle_version>/...
    staging/<random>/                 an upload being unpacked and checked
    active.json                       per kind: the versions run, oldest first (the last is running)

A version enters the history only once the station has switched to it, so the history is exactly
what ran, and ``rollback`` returns to the one before. Uploads are unpacked by
:func:`serving.station.upload.extract_plain_files` (plain files and folders only, size-limited).

>>> store = BundleStore("station-data/bundles", keep=3)   # doctest: +SKIP
>>> store.history("anomaly")                              # doctest: +SKIP
['patchcore-20261127T101500Z-1a2b3c4d', 'patchcore-20261127T121500Z-5e6f7a8b']
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import Field, ValidationError

from serving.engine.bundle import MANIFEST, Bundle
from serving.engine.manifest import VERSION_PATTERN
from serving.engine.signing import SIGNATURE_FILE
from serving.errors import BundleError
from serving.station.upload import extract_plain_files
from serving.strict import StrictModel, error_lines

KINDS = ("anomaly", "detector")


class KindHistory(StrictModel):
    """One kind's versions, oldest first, and the config's bundle path when the last one was deployed."""

    history: list[Annotated[str, Field(pattern=VERSION_PATTERN)]] = Field(
        [], description="versions that ran here; the last one runs now")
    config_bundle: str | None = None


class StoreState(StrictModel):
    """``active.json``."""

    anomaly: KindHistory = KindHistory()
    detector: KindHistory = KindHistory()


@contextlib.contextmanager
def _removed_on_failure(folder: Path, disk_error: Callable[[OSError], str]) -> Iterator[None]:
    """Remove ``folder`` (a staging folder) if the block fails, whatever the failure; an OSError becomes a
    :class:`BundleError` with the message ``disk_error`` makes of it."""
    try:
        yield
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise BundleError(disk_error(exc)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


class BundleStore:
    """Bundle versions on the station's disk, and which of them ran in what order."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep
        self._lock = threading.Lock()
        for d in (*KINDS, "staging"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for old in (self.root / "staging").iterdir():  # uploads cut short by a restart
            shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ history
    def _state(self) -> StoreState:
        p = self.root / "active.json"
        try:
            return StoreState.model_validate_json(p.read_bytes()) if p.exists() else StoreState()
        except ValidationError as exc:
            raise BundleError(f"{p}: unreadable ({error_lines(exc, model=StoreState)[0]}); fix or delete it (the "
                              "stored bundles are untouched; without it the station runs its config's bundle)") from None

    def _save(self, state: StoreState) -> None:
        p = self.root / "active.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=1))
        tmp.replace(p)

    def history(self, kind: str) -> list[str]:
        """Versions of ``kind`` that ran here, oldest first; the last one is running."""
        return list(getattr(self._state(), kind).history)

    def kind_of(self, version: str) -> str:
        """Which kind a stored version is."""
        return "detector" if (self.root / "detector" / version).is_dir() else "anomaly"

    def path(self, kind: str, version: str) -> Path:
        """Where a stored version lives."""
        return self.root / kind / version

    def active(self, kind: str, config_bundle: str | None) -> Path | None:
        """The deployed version to run at start, or None to run the config's bundle.

        A deploy wins over the config only while the config still names the bundle it named at that
        deploy: an engineer who edits ``bundle:`` afterwards means it."""
        st = getattr(self._state(), kind)
        if not st.history or st.config_bundle != config_bundle:
            return None
        p = self.path(kind, st.history[-1])
        return p if (p / MANIFEST).is_file() else None

    def activated(self, kind: str, version: str, config_bundle: str | None, *, rollback: bool = False) -> list[str]:
        """Record that ``version`` now runs (after a rollback, the version rolled back from leaves the history);
        drop versions beyond ``keep`` from disk. Returns the versions removed."""
        with self._lock:
            state = self._state()
            st = getattr(state, kind)
            hist = st.history[:-1] if rollback else st.history
            st.history, st.config_bundle = [v for v in hist if v != version] + [version], config_bundle
            self._save(state)
            return self._prune(kind, st.history)

    def previous(self, kind: str) -> str | None:
        """The version a rollback would return to: the latest earlier one still on disk."""
        for v in reversed(self.history(kind)[:-1]):
            if (self.path(kind, v) / MANIFEST).is_file():
                return v
        return None

    def _prune(self, kind: str, hist: list[str]) -> list[str]:
        keep = set(hist[-self.keep:])
        removed = []
        for d in (self.root / kind).iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        if len(hist) > self.keep:
            state = self._state()
            getattr(state, kind).history = hist[-self.keep:]
            self._save(state)
        return removed

    # ------------------------------------------------------------------ intake
    def staging(self) -> Path:
        """A fresh folder to unpack an upload into."""
        d = self.root / "staging" / uuid.uuid4().hex
        d.mkdir(parents=True)
        return d

    def unpack(self, stream: BinaryIO, max_bytes: int) -> Path:
        """Unpack a (gzipped) tar of a bundle folder into staging; refuse anything but plain files and folders."""
        dest = self.staging()
        with _removed_on_failure(dest, lambda exc: f"upload: cannot unpack into {dest.parent} ({exc.strerror or exc}); "
                                 "check the station's disk and the archive's names"):
            extract_plain_files(stream, dest, max_bytes)
        return dest

    def keep_copy(self, bundle: Bundle) -> tuple[Path, bool]:
        """Put a verified bundle in the store: exactly the manifest bytes that were verified, and each listed file,
        hashed while it is copied (a file changed since verification is refused). Returns (path, whether new).

        A version already stored with the same manifest is reused (the caller verifies it as it loads); one with
        the same version but another manifest is refused."""
        kind, version = bundle.manifest.model_kind, bundle.manifest.bundle_version
        dest = self.path(kind, version)
        if (dest / MANIFEST).is_file():
            if (dest / MANIFEST).read_bytes() != bundle.manifest_bytes:
                raise BundleError(f"{bundle.root}: bundle_version {version} is already on this station with a "
                                  "different manifest; a changed bundle must have a new version")
            return dest, False
        tmp = self.root / "staging" / f"copy-{uuid.uuid4().hex}"
        with _removed_on_failure(tmp, lambda exc: f"{dest}: cannot keep a copy of the bundle ({exc.strerror or exc}); "
                                 "check the station's disk"):
            for name, entry in bundle.manifest.files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                if _copy_hashed(bundle.root / name, tmp / name) != entry.sha256:
                    raise BundleError(f"{bundle.root / name}: changed since it was verified; copy the bundle again")
            (tmp / MANIFEST).write_bytes(bundle.manifest_bytes)
            if bundle.signature.signed:
                (tmp / SIGNATURE_FILE).write_bytes(bundle.signature.raw)
            shutil.rmtree(dest, ignore_errors=True)  # a damaged earlier copy without its manifest
            os.replace(tmp, dest)
        return dest, True

    def discard(self, path: Path) -> None:
        """Remove a staged upload or a stored copy that was refused."""
        if path.is_relative_to(self.root):
            shutil.rmtree(path, ignore_errors=True)


def _copy_hashed(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` and return the sha256 of the bytes copied."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for block in iter(lambda: fi.read(1 << 20), b""):
            h.update(block)
            fo.write(block)
    return h.hexdigest()
