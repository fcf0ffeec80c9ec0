"""What the station tells people and the PLC about itself: the page's top line, the PLC's state register, and
the alarm (and stop-line) when the camera could not see the line.

Part of :class:`serving.station.runtime.Station` (a mixin: it uses the station's state, alarms and actuator).
"""

from __future__ import annotations

from serving.lineio.actuation.modbus_map import STATE_ALARM, STATE_NOT_INSPECTING, STATE_RUNNING, STATE_STOPPED


class LineStatus:
    """The station's status for the operator page and the PLC (mixed into the Station)."""

    def status(self) -> tuple[str, str]:
        """(level, words) for the top of the operator page: 'stop' whenever parts are not really protected."""
        if not self.state.running:
            return "stop", "STATION STOPPED"
        if self.cfg.actuator.kind != "none" and not self.actuator.connected:
            return "stop", "NOT REJECTING – PLC OFFLINE"
        if self.alarms.is_active("camera"):
            return "stop", "NOT INSPECTING – CAMERA"
        if self.actuator.link.stop_line_latched:
            return "stop", "LINE STOP REQUESTED – RESET AT THE PLC OR HERE"
        events = [a for a in self.alarms.active() if a.kind == "event" and a.level == "error"]
        if events:
            return "warn", f"CHECK PARTS – {len(events)} UNACKNOWLEDGED ALARM{'S' if len(events) > 1 else ''}"
        if self.alarms.active():
            return "warn", "RUNNING WITH WARNINGS"
        return "ok", "INSPECTING"

    def plc_state(self) -> int:
        """The station-state register: stopped, running, running with an alarm, or not inspecting."""
        if not self.state.running:
            return STATE_STOPPED
        if self.alarms.is_active("camera") or self.alarms.is_active("inspection"):
            return STATE_NOT_INSPECTING
        return STATE_ALARM if any(a.level == "error" for a in self.alarms.active()) else STATE_RUNNING

    def _on_unseen(self, why: str) -> None:
        self.alarms.event("unseen", f"free-run: moments passed uninspected ({why})")
        if self.cfg.actuator.late_policy == "stop_line" and not self.actuator.link.stop_line_latched:
            self.actuator.stop_line(0, f"camera cannot see the line: {why}")
