"""The engine bundle: the one contract between the pipeline and the station.

A bundle is a folder with ``manifest.json`` beside ``model.onnx``, an optional
TensorRT engine and the explainability files. The manifest lists every file's
sha256, and ``manifest.sig`` signs the manifest (:mod:`serving.engine.signing`).
:func:`load_bundle` refuses a bundle whose schema, files, hashes or signature do
not match, whose paths leave the folder, or that holds a link or an unlisted file,
so a station keeps running the bundle it has.

>>> load_bundle("/nonexistent")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
serving.errors.BundleError: /nonexistent: no manifest.json; ...Export one with `lineguard export`
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from serving.engine.manifest import SUPPORTED_SCHEMAS, FileEntry, Manifest
from serving.engine.signing import SIGNATURE_FILE, Signature, Trust, verify_signature
from serving.errors import BundleError
from serving.strict import error_lines

MANIFEST = "manifest.json"
CARRIED = (MANIFEST, SIGNATURE_FILE)  #: unlisted files that travel with a bundle (uploads, the station's store)
#: files the engineer's export folder may also hold unlisted: the pipeline's training state and DVC's .gitignore;
#: a station never opens them and a deploy never carries them
UNLISTED_OK = frozenset({*CARRIED, "enrollment.pt", ".gitignore"})


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: Manifest
    signature: Signature = field(default_factory=lambda: Signature(False))
    manifest_sha256: str = ""
    manifest_bytes: bytes = field(default=b"", repr=False)  #: exactly what was verified (copies write these)

    def path(self, name: str) -> Path:
        """Absolute path of a file listed in the manifest."""
        return self.root / name


def open_regular(path: Path):
    """``path`` opened for binary reading; :class:`OSError` naming it unless it is a regular file. Opened without
    blocking: a FIFO put in a listed file's place (after the folder scan) would otherwise hang the load for good."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # no effect on a regular file's reads
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def _check_npy_size(fh) -> None:
    """ValueError unless the ``.npy`` file open as ``fh`` holds the bytes its header declares: numpy allocates what
    the header says before reading, so a header claiming terabytes would exhaust memory instead of failing. Other
    formats pass through to ``np.load``'s own errors. Leaves ``fh`` at its start."""
    if fh.read(6) != b"\x93NUMPY":
        fh.seek(0)
        return
    fh.seek(0)
    version = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(fh, max_header_size=10_000)
    need = fh.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    if have < need:
        raise ValueError(f"its header declares {shape} {dtype} ({need} bytes), the file has {have}")


def read_array(path: Path) -> np.ndarray:
    """A ``.npy`` file as a read-only array in the process's own memory; :class:`BundleError` naming the file if it
    is not one (truncated, a pickle, a zip or ``.npz``, another format, not a regular file).

    Never memory-mapped: a file changed in place after the bundle was verified (a ``cp`` over the active bundle)
    would show through a mapping unverified, and a truncated one kills the process with SIGBUS mid-part."""
    try:
        with open_regular(path) as fh:
            _check_npy_size(fh)
            array = np.load(fh, allow_pickle=False)
            if not isinstance(array, np.ndarray):
                array.close()
                raise BundleError(f"{path}: an .npz archive, not one .npy array; re-export the bundle")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # numpy reads a "PK" header as a zip
        raise BundleError(f"{path}: not a readable .npy array ({exc}); re-export the bundle") from None
    array.flags.writeable = False  # shared by every part and thread: nothing may change it after the checks
    return array


def sha256_file(path: Path) -> str:
    """Hex sha256 of a regular file (:func:`open_regular`), read in blocks (into one reused buffer where Python has
    ``hashlib.file_digest``)."""
    with open_regular(path) as fh:
        if hasattr(hashlib, "file_digest"):  # 3.11+: ~20 % faster on a bundle's graphs, part of every cold start
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
        return h.hexdigest()


def sha256_files(paths: list[Path], sizes: list[int], threads: int = 2) -> list[str]:
    """Hex sha256 of each of ``paths``, largest (by ``sizes``) first, on ``threads`` threads: hashing releases the
    GIL, and a bundle's few large graphs and arrays would otherwise hash one after the other on one core, on every
    cold start and swap. An error reading a file (an :class:`OSError` naming it) is raised here, in this thread."""
    # plain threads, not concurrent.futures: importing it is ~13 ms of a cold start, a third of what this saves
    digests: list[str | BaseException] = [""] * len(paths)
    todo = sorted(range(len(paths)), key=lambda i: sizes[i])  # popped from the end: largest first
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                digests[i] = sha256_file(paths[i])
            except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread, not lost with this one
                digests[i] = exc

    helpers = [threading.Thread(target=work, daemon=True) for _ in range(max(0, min(threads, len(paths)) - 1))]
    for t in helpers:
        t.start()
    work()
    for t in helpers:
        t.join()
    for d in digests:
        if isinstance(d, BaseException):
            raise d
    return digests  # type: ignore[return-value]


def file_entries(root: Path, names: list[str]) -> dict[str, FileEntry]:
    """Manifest ``files`` entries for ``names`` relative to ``root``."""
    return {n: FileEntry(sha256=sha256_file(root / n), bytes=(root / n).stat().st_size) for n in sorted(names)}


def write_manifest(root: Path, manifest: Manifest, sign=None) -> Path:
    """Write ``manifest.json`` (atomically: a station may be watching the folder), then sign it with
    ``sign(root)`` when given; an older signature no longer matches, so without one it is removed."""
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    (root / SIGNATURE_FILE).unlink(missing_ok=True)
    tmp.replace(root / MANIFEST)
    if sign is not None:
        sign(root)
    return root / MANIFEST


def _inside(root: Path, name: str, role: str, mpath: Path, *, resolve: bool = True) -> None:
    """Refuse ``name`` unless it is a plain relative path that stays inside the (resolved) bundle folder.
    ``resolve=False`` checks the name alone (string checks, no path objects: it runs per listed file on every
    cold start): enough where :func:`_check_tree` then refuses every link."""
    if not name or name.startswith("/") or ".." in name.split("/") or name != name.strip() or "\0" in name:
        raise BundleError(f"{mpath}: {role} {name!r} is not a path inside the bundle; re-export the bundle")
    if resolve and not (root / name).resolve().is_relative_to(root):
        raise BundleError(f"{mpath}: {role} {name!r} leads outside the bundle folder; re-export the bundle")


def _check_tree(root: Path, listed: set[str]) -> set[str]:
    """Refuse links anywhere in the folder and files the manifest does not list (nothing unverified rides along);
    the plain files found, by their names relative to ``root``.

    One ``scandir`` per folder, its entries' own types (no further system call per file): a bundle holds a few
    hundred files and this runs on every cold start and bundle swap."""
    folders, found = [("", str(root))], set()
    while folders:
        prefix, folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_symlink():
                    raise BundleError(f"{entry.path}: a link inside the bundle; bundles hold plain files only (copy "
                                      "the target in, or re-export)")
                if entry.is_dir(follow_symlinks=False):
                    folders.append((rel + "/", entry.path))
                elif rel not in listed and rel not in UNLISTED_OK:
                    raise BundleError(f"{entry.path}: not listed in the manifest (unverified file); remove it or "
                                      "re-export the bundle")
                elif entry.is_file(follow_symlinks=False):
                    found.add(rel)
    return found


def load_bundle(root: str | Path, *, verify_hashes: bool = True, trust: Trust | None = None) -> Bundle:
    """Read and verify a bundle; raise :class:`BundleError` that says what is wrong.

    Checks, in order: the manifest exists and parses, its signature verifies against ``trust`` (a station
    always passes its trusted keys; pipeline tools reading their own output pass none), its schema version
    is one this station speaks, every listed path stays inside the folder and exists, the folder holds no
    link and no unlisted file, and (unless ``verify_hashes=False``) every file's sha256 matches.
    """
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: no {MANIFEST}; is this an engine bundle? Export one with `lineguard export`")
    if mpath.is_symlink():
        raise BundleError(f"{mpath}: a link; bundles hold plain files only")
    root = root.resolve()
    mpath = root / MANIFEST
    data = mpath.read_bytes()
    signature = verify_signature(root, data, trust) if trust is not None else Signature(False)
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc}); re-export the bundle") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in SUPPORTED_SCHEMAS:
        raise BundleError(
            f"{mpath}: schema_version {version!r}, this station reads schemas {list(SUPPORTED_SCHEMAS)}; "
            "re-export the bundle with a matching lineguard, or upgrade the station"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{mpath}: {error_lines(exc, model=Manifest)[0]}; re-export the bundle") from None
    for role, name in (("model_file", manifest.model_file), ("tensorrt.file", manifest.tensorrt.file)):
        if name is not None and name not in manifest.files:
            raise BundleError(f"{mpath}: {role} {name!r} is not listed under 'files' (unverifiable); re-export")
        if name is not None:
            _inside(root, name, role, mpath)
    search = {"graph": manifest.search.graph, **manifest.search.files} if manifest.search else {}
    for section, names in (("explain", manifest.explain), ("bench", manifest.bench), ("search", search)):
        for role, name in names.items():
            _inside(root, name, f"{section}.{role}", mpath)
            listed = name in manifest.files or (name.endswith("/") and any(f.startswith(name) for f in manifest.files))
            if not listed:
                raise BundleError(f"{mpath}: {section}.{role} {name!r} is not listed under 'files' (unverifiable); "
                                  "re-export the bundle")
    for name in manifest.files:
        _inside(root, name, "file", mpath, resolve=False)
    found = _check_tree(root, set(manifest.files))
    missing = next((name for name in manifest.files if name not in found), None)
    if missing is not None:
        raise BundleError(f"{root}/{missing}: listed in the manifest but missing; copy the whole bundle folder")
    if verify_hashes:
        paths, entries = [root / name for name in manifest.files], list(manifest.files.values())
        try:
            digests = sha256_files(paths, [e.bytes for e in entries])
        except OSError as exc:  # gone or unreadable since the folder was listed: the bundle is refused, not a crash
            raise BundleError(f"{exc.filename or root}: could not be read ({exc.strerror or exc}); copy the whole "
                              "bundle folder again") from None
        for fpath, entry, digest in zip(paths, entries, digests):
            if digest != entry.sha256:
                raise BundleError(f"{fpath}: sha256 does not match the manifest (corrupt or modified); "
                                  "re-copy or re-export the bundle")
    return Bundle(root=root, manifest=manifest, signature=signature, manifest_sha256=hashlib.sha256(data).hexdigest(),
                  manifest_bytes=data)
