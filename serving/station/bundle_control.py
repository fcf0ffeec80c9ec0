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

from serving.engine.anomaly import AnomalyEngine
from serving.engine.bundle import Bundle, load_bundle
from serving.engine.detector import DetectorEngine
from serving.engine.preprocess import Roi, check_roi_scale
from serving.errors import BundleError, LineguardError
from serving.gate import GateRules
from serving.station.inspect import inspect
from serving.station.smoke import smoke_test

log = logging.getLogger("lineguard.station")


class BundleControl:
    """Opening, checking and swapping the anomaly and detector bundles (mixed into the Station)."""

    def _open_bundles(self) -> None:
        """At start: the deployed versions where the store has them, else the config's bundles; either way the
        station runs its own verified copy in the store, and the version it runs is the last of its history."""
        self.engine = self._open_engine(self._start_bundle("anomaly", self.cfg.bundle))
        det = self._start_bundle("detector", self.cfg.detector_bundle)
        self.detector = self._open_detector(det) if det is not None else None
        self._flag_unsigned()

    def _start_bundle(self, kind: str, config_path: str | None) -> Bundle | None:
        active = self.store.active(kind, config_path)
        if active is not None:
            try:
                b = load_bundle(active, trust=self.trust)
                log.info("running the deployed %s bundle %s (the config names %s)", kind, active.name, config_path)
                return b
            except BundleError as exc:
                if config_path is None:
                    raise
                self.alarms.raise_("bundle", f"the deployed {kind} bundle cannot run ({exc}); running the config's "
                                             f"bundle {config_path} instead: deploy again", "warning")
        if config_path is None:
            return None
        b = self._adopt(load_bundle(config_path, trust=self.trust, verify_hashes=False))
        if self.store.history(kind)[-1:] != [b.manifest.bundle_version]:
            self.store.activated(kind, b.manifest.bundle_version, config_path)
        return b

    def _adopt(self, incoming: Bundle) -> Bundle:
        """The station's own copy of a (signature-checked) bundle, made once per version, verified as it loads,
        and proven to carry the very manifest that was checked (nothing swapped in between)."""
        stored, fresh = self.store.keep_copy(incoming)
        try:
            copy = load_bundle(stored, trust=self.trust)
        except BundleError:
            if fresh:
                self.store.discard(stored)
                raise
            self.store.discard(stored)  # a damaged earlier copy: replace it from the incoming files
            stored, fresh = self.store.keep_copy(incoming)
            copy = load_bundle(stored, trust=self.trust)
        if copy.manifest_sha256 != incoming.manifest_sha256:
            if fresh:
                self.store.discard(stored)
            raise BundleError(f"{incoming.root}: the bundle changed while it was being checked; send it again")
        return copy

    def _flag_unsigned(self) -> None:
        """An unsigned bundle runs only with ``allow_unsigned``, and never quietly."""
        unsigned = [e.bundle.manifest.bundle_version for e in (self.engine, self.detector)
                    if e is not None and not e.bundle.signature.signed]
        if unsigned:
            self.alarms.raise_("unsigned_bundle", f"running unsigned bundle {', '.join(unsigned)} "
                                                  "(bundles.allow_unsigned): nobody vouches for it", "warning")
        else:
            self.alarms.clear("unsigned_bundle")

    def _open_engine(self, bundle: Bundle) -> AnomalyEngine:
        engine = AnomalyEngine(bundle)
        if self.cfg.roi:
            engine.roi = Roi.parse(self.cfg.roi)
            check_roi_scale(engine.roi, engine.spec, source="roi")
        # no warm-up run: the first part costs what any part costs (measured by `lineguard-station bench`),
        # and a graph that fails on it fails that part safe, with an alarm, like any other engine fault
        return engine

    def _open_detector(self, bundle: Bundle) -> DetectorEngine:
        """A detector bundle whose classes the station knows (its config's ``classes`` and gate rules)."""
        det = DetectorEngine(bundle)
        names, where = det.classes, bundle.root
        if self.cfg.classes and not set(names) <= set(self.cfg.classes):
            raise BundleError(f"{where}: detector classes {sorted(set(names) - set(self.cfg.classes))} are not in "
                              f"this station's classes {self.cfg.classes}; add them to 'classes' in the station config "
                              "or deploy the detector of this product")
        unknown = sorted(set(self.cfg.gate.class_confidence) - set(names))
        if unknown:
            raise BundleError(f"{where}: gate.class_confidence names {unknown}, which this detector does not know "
                              f"(it finds {names}); fix the station config or deploy the matching detector")
        return det

    @staticmethod
    def _rules(gate: GateRules, engine: AnomalyEngine, detector: DetectorEngine | None) -> GateRules:
        rules = gate.with_calibration(engine.thresholds.image, engine.thresholds.pixel)
        if detector is None:
            return rules
        rules = rules.with_detector(detector.det.confidence)
        detector.report_from(rules.class_confidence)
        return rules

    def running(self, kind: str) -> Bundle | None:
        """The bundle of ``kind`` in use now."""
        eng = self.engine if kind == "anomaly" else self.detector
        return eng.bundle if eng is not None else None

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
