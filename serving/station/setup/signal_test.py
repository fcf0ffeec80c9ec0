"""The signal test: a FAIL on a part's own merits and that part's reject pulse on time, after the test started."""

from __future__ import annotations

import threading
import time

from serving.station.setup.models import SignalStatus


class SignalTest:
    """Waits for a FAIL decided by the model or the gate (not a fail-safe reject) on a part inspected after the
    test started, and for that part's reject pulse to have fired on time; passing is audited once."""

    def __init__(self, station, user: str) -> None:
        st = self.station = station
        self.user, self.started_at = user, time.time()
        self.boot_id = st.boot_id
        # the last part triggered so far, stored or not: a part still being written or waiting to be inspected
        # was on the line before the test
        self.after_seq = max(int(st.evidence.scalar("SELECT COALESCE(MAX(seq), 0) FROM frames WHERE boot_id=?",
                                                    (st.boot_id,)) or 0), st.source.seq)
        a = st.cfg.actuator
        self.pulse_observable = a.kind != "none" and a.pulse_owner == "station"
        if a.kind == "none":
            self.note = "actuator 'none': no reject output is wired, so the test proves the FAIL only"
        elif a.pulse_owner == "plc":
            self.note = ("the PLC times the reject pulse (pulse_owner: plc): the station cannot see it; check the "
                         "part lands in the reject bin")
        else:
            self.note = "the reject pulse is the one the station wrote to the PLC for the failed part"
        self._result = SignalStatus(started_by=user, started_at=self.started_at, after_seq=self.after_seq,
                                    pulse_observable=self.pulse_observable, note=self.note)
        self._lock = threading.Lock()

    def status(self) -> SignalStatus:
        """What happened since the start; the first passing part is kept."""
        with self._lock:
            if not self._result.passed:
                self._look()
            return self._result.model_copy()

    def _look(self) -> None:
        st, r = self.station, self._result
        fails = [x for x in st.evidence.query("boot_id=? AND seq>? AND verdict='FAIL'", (self.boot_id, self.after_seq),
                                              limit=200, order="seq") if not x.rule.startswith("fail_safe")]
        if not fails:
            return
        by_seq = {x.seq: x for x in fails}
        reports = [p for p in list(st.actuator.pulses.reports) if p.seq in by_seq]
        good = [p for p in reports if not (p.late or p.short or p.missed)]
        chosen = by_seq[good[0].seq] if good else fails[0]
        r.fail_seq, r.fail_rule, r.fail_score = chosen.seq, chosen.rule, chosen.score
        if good:
            p = good[0]
            r.pulse_seq, r.pulse_start_error_ms, r.pulse_width_ms, r.pulse_problem = p.seq, p.start_error_ms, p.width_ms, None
        elif reports:
            p = reports[-1]
            r.pulse_seq, r.pulse_start_error_ms, r.pulse_width_ms = p.seq, p.start_error_ms, p.width_ms
            r.pulse_problem = f"part {p.seq}: {p.note or 'pulse not on time'}"
        if good or not self.pulse_observable:  # no pulse the station can see: the FAIL is what can be proven
            r.passed, r.passed_at = True, time.time()
            st.audit.append(self.user, "setup_signal_test_passed", {
                "fail_seq": r.fail_seq, "rule": r.fail_rule, "score": r.fail_score, "pulse_seq": r.pulse_seq,
                "pulse_start_error_ms": r.pulse_start_error_ms, "pulse_width_ms": r.pulse_width_ms,
                "actuator": st.cfg.actuator.kind, "pulse_owner": st.cfg.actuator.pulse_owner})
