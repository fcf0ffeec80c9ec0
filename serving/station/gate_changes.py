"""Gate changes made through the API: held to a range around the calibration, confirmed when they let parts
through, and kept across restarts.

A threshold must stay within :data:`THRESHOLD_RANGE` times the bundle's calibrated one (outside it the
change is refused, naming the field). Anything that lets parts through that the current rules reject,
``on_error: pass``, an enabled ``pass_all`` SOP rule, or a threshold raised above :data:`CONFIRM_ABOVE`
times its calibration, needs ``confirm: true`` in the same request (:class:`NeedsConfirmation`).

A change that takes effect is written to the gate overrides file, sealed with the audit key, and
loaded over the config's gate at the next start (audited). If the config's own gate was edited since,
the config wins: the old overrides are set aside, audited and shown as a warning.

>>> from serving.gate.rules import GateRules
>>> base = GateRules().with_calibration(2.0, 0.5)
>>> lets_parts_through(base, GateRules(on_error="pass", image_threshold=4.0).with_calibration(2.0, 0.5), 2.0, 0.5)
['on_error: pass (a part whose inspection failed is passed)', 'image_threshold 4 is 2x the calibrated 2']
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from pathlib import Path

from pydantic import ValidationError

from serving.errors import ConfigError, LineguardError
from serving.gate.rules import GateRules
from serving.station.audit import AuditLog, AuditTampered
from serving.strict import describe_errors, field_error

log = logging.getLogger("lineguard.station")

#: a threshold set through the API must lie within these multiples of the bundle's calibrated one
THRESHOLD_RANGE = (0.2, 5.0)
#: raising a threshold above this multiple of its calibration lets real defects through: confirm it
CONFIRM_ABOVE = 1.5


class NeedsConfirmation(LineguardError):
    """A gate change that lets parts through was sent without ``confirm: true``."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"this change lets parts through: {'; '.join(reasons)}. Send it again with \"confirm\": true "
                         "if that is intended (it is audited)")


def check_range(rules: GateRules, image_cal: float, pixel_cal: float, fields=("image_threshold", "pixel_threshold")) -> None:
    """Refuse (a located ``ValidationError``) a resolved threshold among ``fields`` outside :data:`THRESHOLD_RANGE`
    of its calibration."""
    lo, hi = THRESHOLD_RANGE
    for name, value, cal in (("image_threshold", rules.image_threshold, image_cal),
                             ("pixel_threshold", rules.pixel_threshold, pixel_cal)):
        if name in fields and cal > 0 and not lo * cal <= value <= hi * cal:
            raise field_error(name, f"{value:.6g} is outside {lo:g}x..{hi:g}x the bundle's calibrated {cal:.6g} "
                                    f"(allowed {lo * cal:.6g} to {hi * cal:.6g}); recalibrate the bundle for a larger "
                                    "change, or send null for the calibrated value", value)


def lets_parts_through(old: GateRules, new: GateRules, image_cal: float, pixel_cal: float) -> list[str]:
    """What ``new`` (resolved) passes that ``old`` (resolved) would reject, in words; empty when nothing."""
    reasons = []
    if new.on_error == "pass" and old.on_error != "pass":
        reasons.append("on_error: pass (a part whose inspection failed is passed)")
    was = {s.name for s in old.sop if s.enabled and s.action == "pass_all"}
    reasons += [f"SOP rule {s.name!r}: pass_all (every part passes)" for s in new.sop
                if s.enabled and s.action == "pass_all" and s.name not in was]
    for name, cal in (("image_threshold", image_cal), ("pixel_threshold", pixel_cal)):
        value, before = getattr(new, name), getattr(old, name)
        if cal > 0 and value > before and value > CONFIRM_ABOVE * cal:
            reasons.append(f"{name} {value:.6g} is {value / cal:.3g}x the calibrated {cal:.6g}")
    return reasons


class GateOverrides:
    """The gate as last changed through the API: a JSON file sealed with the audit key."""

    def __init__(self, path: str | Path, audit: AuditLog) -> None:
        self.path, self.audit = Path(path), audit

    def _seal(self, doc: dict) -> str:
        body = json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True, allow_nan=False)
        return self.audit.mac(b"gate-overrides " + body.encode())

    def save(self, gate: GateRules, base: GateRules, user: str) -> None:
        """Keep ``gate`` (made over the config's ``base``) for the next start."""
        doc = {"gate": gate.model_dump(mode="json"), "base": base.model_dump(mode="json"), "user": user,
               "time": time.time()}
        doc["mac"] = self._seal(doc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path)

    def load(self, base: GateRules, alarms=None) -> dict | None:
        """The saved gate (a mapping to validate with the station's config), or None: none saved, or the config's
        gate was edited since (then the saved one is set aside, audited, and alarmed as a warning)."""
        if not self.path.exists():
            return None
        try:
            doc = json.loads(self.path.read_text())
            ok = isinstance(doc, dict) and hmac.compare_digest(str(doc.get("mac")), self._seal(doc))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise AuditTampered(f"api.gate_overrides {self.path}: changed outside the station (its seal does not "
                                "verify with the audit key). Compare it with the gate_changed entries of the audit "
                                "log, then delete it to start from the config's gate")
        if doc.get("base") != base.model_dump(mode="json"):
            aside = self.path.with_name(f"{self.path.stem}.superseded-{int(time.time())}.json")
            self.path.replace(aside)
            self.audit.append("station", "gate_overrides_superseded", {"file": str(aside), "by": doc.get("user"),
                                                                       "gate": doc.get("gate")})
            msg = (f"gate changes made on the API by {doc.get('user')} were not applied: the config's gate was edited "
                   f"since; they are kept in {aside}")
            log.warning(msg)
            if alarms is not None:
                alarms.raise_("gate_overrides", msg, "warning")
            return None
        return doc["gate"]

    def apply_at_start(self, cfg, alarms=None) -> GateRules | None:
        """The saved gate validated with the whole station config ``cfg`` (audited), or None."""
        saved = self.load(cfg.gate, alarms)
        if saved is None:
            return None
        try:
            gate = validated_gate(cfg, saved)
        except ValidationError as exc:
            raise ConfigError(f"api.gate_overrides {self.path}: no longer valid with this config:\n"
                              f"{describe_errors(exc, prefix='gate')}\ndelete the file to start from the config's "
                              "gate") from None
        changed = {k: v for k, v in gate.model_dump(mode="json").items() if cfg.gate.model_dump(mode="json")[k] != v}
        self.audit.append("station", "gate_overrides_loaded", {"file": str(self.path), "changed": changed})
        log.info("gate changes made through the API loaded from %s: %s", self.path, changed)
        return gate


def validated_gate(cfg, gate: dict) -> GateRules:
    """``gate`` checked as part of the whole station config ``cfg`` (cross-section checks too, such as the
    decision deadline against the reject pulse's delay)."""
    return type(cfg).model_validate({**cfg.model_dump(), "gate": gate}).gate


class GateControl:
    """Engineers' gate changes on a running station (mixed into the Station: it uses its config, locks, engine,
    history, overrides and audit log)."""

    def update_gate(self, changes: dict, user: str, confirm: bool = False) -> GateRules:
        """Change gate settings (engineer): validated as a whole and with the station config, thresholds kept near
        the calibration, ``confirm`` needed for what lets parts through (serving.station.gate_changes); saved for
        the next start, audited, effective from the next frame."""
        with self._control:
            old = self.cfg.gate.model_dump(mode="json")
            new_cfg = GateRules.model_validate({**old, **changes})
            new_cfg = validated_gate(self.cfg, new_cfg.model_dump(mode="json"))
            rules = self._rules(new_cfg, self.engine, self.detector)
            cal = (self.engine.thresholds.image, self.engine.thresholds.pixel)
            check_range(rules, *cal, fields=changes)
            through = lets_parts_through(self.rules, rules, *cal)
            if through and not confirm:
                raise NeedsConfirmation(through)
            self.gate_overrides.save(new_cfg, self._config_gate, user)
            self.audit.append(user, "gate_changed", {"before": {k: old[k] for k in changes}, "after": changes,
                                                     "lets_parts_through": through, "confirmed": bool(through)})
            with self._lock:
                self.cfg.gate, self.rules = new_cfg, rules
                self.history.resize(new_cfg.persistence_m)  # a longer persistence window needs a longer history
        return rules
