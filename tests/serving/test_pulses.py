"""PulseMonitor's judgement of each reject pulse, from edge times alone (no clock, no PLC)."""

from collections import Counter

from serving.alarms import Alarms
from serving.lineio.actuation.pulses import PulseMonitor

MS = 1_000_000


def monitor():
    counts, alarms = Counter(), Alarms()
    return PulseMonitor(5.0, 16.0, 20.0, alarms, lambda k: counts.update([k])), counts, alarms


def test_a_pulse_on_time_and_long_enough_is_reported_clean_and_raises_nothing():
    m, counts, alarms = monitor()
    m.started(1, intended_ns=100 * MS, at_ns=104 * MS)  # 4 ms late: inside the 5 ms tolerance
    (r,) = m.ended(at_ns=121 * MS)
    assert (r.start_error_ms, r.width_ms, r.late, r.short, r.note) == (4.0, 17.0, False, False, "")
    assert not counts and not alarms.active()


def test_a_late_start_and_a_short_pulse_are_each_counted_and_alarmed_with_the_part():
    m, counts, alarms = monitor()
    m.started(2, intended_ns=100 * MS, at_ns=106 * MS)
    (late,) = m.ended(at_ns=126 * MS)  # 6 ms late, full width
    m.started(3, intended_ns=200 * MS, at_ns=200 * MS)
    (short,) = m.ended(at_ns=215 * MS)  # on time, 15 ms of a 16 ms minimum
    assert late.late and not late.short and "+6.0 ms late" in late.note
    assert short.short and not short.late and "15.0 ms" in short.note
    assert counts == {"pulse_late": 1, "pulse_short": 1}
    messages = {a.name: a.message for a in alarms.active()}
    assert "part 2" in messages["pulse_late"] and "part 3" in messages["pulse_short"]


def test_merged_pulses_end_together_and_one_already_on_counts_from_its_intended_start():
    m, counts, _ = monitor()
    m.started(4, intended_ns=0, at_ns=1 * MS)
    m.started(5, intended_ns=15 * MS, at_ns=None)  # the output was already on for part 4
    reports = m.ended(at_ns=35 * MS)
    assert [(r.seq, r.start_error_ms, r.width_ms) for r in reports] == [(4, 1.0, 34.0), (5, 0.0, 20.0)]
    assert not counts and m.ended(at_ns=40 * MS) == []  # nothing left open


def test_a_missed_pulse_is_counted_as_missed_and_tells_the_operator_to_check_the_part():
    m, counts, alarms = monitor()
    r = m.missed(6, 130.0, "it would have hit the next part")
    assert r.missed and r.late and r.width_ms is None and counts == {"missed": 1}
    assert "check that part by hand" in next(a.message for a in alarms.active() if a.name == "pulse_missed")
