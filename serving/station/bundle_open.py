"""Which bundles a station opens at start, and how it opens one: its own verified copy, its engine, its rules.

Part of :class:`serving.station.runtime.Station` (a mixin, like
:class:`~serving.station.bundle_control.BundleControl`, which switches bundles while running: it uses the
station's config, store, trusted keys and alarms).
"""

from __future__ import annotations

import logging

from serving.engine.anomaly import AnomalyEngine
from serving.engine.bundle import Bundle, load_bundle, read_array
from serving.engine.detector import DetectorEngine
from serving.engine.preprocess import Roi, check_roi_scale
from serving.errors import BundleError
from serving.gate import GateRules

log = logging.getLogger("lineguard.station")


class BundleOpening:
    """Opening the anomaly and detector bundles (mixed into the Station)."""

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

    def known_fingerprints(self):
        """Fingerprints of the enrolled normals (the bundle's explain file), or None for a schema 1 bundle."""
        m = self.engine.bundle.manifest
        name = m.explain.get("fingerprints")
        if not m.has_fingerprint or not name:
            return None
        if getattr(self, "_known", (None,))[0] != m.bundle_version:
            self._known = (m.bundle_version, read_array(self.engine.bundle.path(name)))
        return self._known[1]
