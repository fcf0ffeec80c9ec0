"""Which bundles a station runs, and switching them without dropping a part.

Part of :class:`serving.station.runtime.Station` (a mixin: it uses the station's config, locks,
audit log and alarms). Every bundle is checked against the trusted keys first (signature, paths,
hashes), kept in the station's store, then smoke-tested on its stored normals and run once on the
last part seen, all while the old bundle goes on inspecting; only then do the two swap. A version
older than the running one is refused unless it is a rollback, which is audited as one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from serving.engine.bundle import Bundle, load_bundle
from serving.errors import BundleError, LineguardError
from serving.station.bundle_open import BundleOpening
from serving.station.inspect import inspect
from serving.station.smoke import smoke_test

log = logging.getLogger("lineguard.station")


class BundleControl(BundleOpening):
    """Checking and swapping the anomaly and detector bundles (mixed into the Station)."""

    # ------------------------------------------------------------------ switching
    def reload_bundle(self, path: str | Path, user: str, *, rollback: bool = False) -> str:
        """Verify, keep, smoke-test and swap in the bundle at ``path`` (anomaly or detector, by its manifest).

        On any failure the running bundle stays, the refusal is audited and alarmed, and the error says why.
        The old bundle verdicts every part until the new one has produced a verdict on the last part seen.
        Returns the new version."""
        with self._control:
            bundle = None
            known = set()
            try:
                try:
                    incoming = load_bundle(path, trust=self.trust)  # a corrupt copy is named, even of a stored version
                    kind = incoming.manifest.model_kind
                    known = set(self.store.history(kind))
                    bundle = self._adopt(incoming)
                    self._check_order(bundle, rollback)  # on the copy that will run, not on what was sent
                    engine, detector = self.engine, self.detector
                    if kind == "detector":
                        detector = self._open_detector(bundle)
                    else:
                        engine = self._open_engine(bundle)
                    rules = self._rules(self.cfg.gate, engine, detector)
                    smoke = self._try_out(engine, detector, rules, kind, path)
                except (OSError, ValueError, TypeError) as exc:
                    raise BundleError(f"{path}: cannot be used ({type(exc).__name__}: {exc})") from exc
            except LineguardError as exc:
                if bundle is not None and bundle.manifest.bundle_version not in known:
                    self.store.discard(bundle.root)
                self.audit.append(user, "bundle_refused", {"path": str(path), "reason": str(exc),
                                                           "rollback": rollback})
                self.alarms.raise_("bundle", f"new bundle refused, still running "
                                             f"{self.engine.bundle.manifest.bundle_version}: {exc}", "warning")
                raise
            new = bundle.manifest.bundle_version
            old = self.running(kind)
            self.audit.append(user, "bundle_rolled_back" if rollback else "bundle_loaded",  # audit before the swap
                              {"path": str(path), "bundle_version": new, "kind": kind, "signature":
                               bundle.signature.describe(), "manifest_sha256": bundle.manifest_sha256,
                               "previous": old.manifest.bundle_version if old else None, "smoke_test": smoke})
            with self._lock:
                self.engine, self.detector, self.rules = engine, detector, rules
                if kind == "anomaly":
                    self.normals.watch(engine.bundle.manifest)  # the stability baseline is the new bundle's
            self._flag_unsigned()
            removed = self.store.activated(kind, new, self._config_bundle(kind), rollback=rollback)
            if removed:
                log.info("bundle store: removed old %s versions %s (keeping %d)", kind, removed, self.store.keep)
        self.alarms.clear("bundle")
        return new

    def rollback_bundle(self, user: str, kind: str = "anomaly") -> str:
        """Return to the version that ran before the current one (audited as a rollback)."""
        prev = self.store.previous(kind)
        if prev is None:
            raise BundleError(f"no earlier {kind} bundle on this station to roll back to")
        return self.reload_bundle(self.store.path(kind, prev), user, rollback=True)

    def install_upload(self, stream: BinaryIO, user: str) -> str:
        """An uploaded bundle (a tar stream): unpack into staging, then :meth:`reload_bundle` it."""
        staged = self.store.unpack(stream, int(self.cfg.bundles.max_upload_mb * 2**20))
        try:
            return self.reload_bundle(staged, user)
        finally:
            self.store.discard(staged)

    def _config_bundle(self, kind: str) -> str | None:
        return self.cfg.bundle if kind == "anomaly" else self.cfg.detector_bundle

    def _check_order(self, incoming: Bundle, rollback: bool) -> None:
        """Refuse a bundle older than the running one (unless a rollback), and a changed bundle under an old name."""
        cur = self.running(incoming.manifest.model_kind)
        if cur is None:
            return
        new_m, cur_m = incoming.manifest, cur.manifest
        if new_m.bundle_version == cur_m.bundle_version and incoming.manifest_sha256 != cur.manifest_sha256:
            raise BundleError(f"{incoming.root}: bundle_version {new_m.bundle_version} is running with a different "
                              "manifest; a changed bundle must be re-exported under a new version")
        if new_m.provenance.created < cur_m.provenance.created and not rollback:
            raise BundleError(f"{incoming.root}: {new_m.bundle_version} is older than the running "
                              f"{cur_m.bundle_version} (created {new_m.provenance.created_at}); a downgrade is "
                              "refused unless it is a rollback (`lineguard rollback`, audited)")

    def _try_out(self, engine, detector, rules, kind: str, path) -> str:
        """Smoke test on the stored normals, then a real verdict on the last part seen (or a dummy run)."""
        smoke = "detector: no stored normals"
        if kind == "anomaly":
            res = smoke_test(engine)
            if not res.ok:
                raise BundleError(f"{path}: smoke test failed: {res.reason}")
            smoke = res.reason
        with self._lock:
            last = self.state.last_view.image if self.state.last_view is not None else None
        try:
            if last is None:  # nothing inspected yet: the graphs must at least run
                engine.warmup()
                if detector is not None:
                    detector.warmup()
        except Exception as exc:  # noqa: BLE001 - a graph that cannot run is refused like a bad hash
            raise BundleError(f"{path}: the new graph does not run: {type(exc).__name__}: {exc}") from exc
        if last is not None:  # a real verdict, off the line, before the swap
            check = inspect(engine, rules, last, detector=detector, source="bundle check")
            if check.decision.rule.startswith("fail_safe.engine_error"):
                raise BundleError(f"{path}: the new bundle fails on the last part: "
                                  f"{'; '.join(check.decision.reasons) or check.decision.rule}")
        return smoke
