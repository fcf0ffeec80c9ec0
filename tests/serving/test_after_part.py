"""The after-part thread: a part's evidence runs beside the next part's inspection, in order, bounded."""

import threading
import time

from serving.alarms import Alarms
from serving.station.after_part import AfterPart


def test_jobs_run_in_order_off_the_callers_thread_and_close_runs_what_is_queued():
    done, threads = [], set()
    after = AfterPart(Alarms()).start()
    gate = threading.Event()
    after.submit(gate.wait)  # holds the worker, so the next jobs queue behind it
    for i in range(3):
        after.submit(lambda i=i: (done.append(i), threads.add(threading.current_thread().name)))
    assert done == []  # submit did not wait for them
    gate.set()
    after.close()
    assert done == [0, 1, 2] and threads == {"after-part"}


def test_submit_waits_once_depth_jobs_are_queued():
    after = AfterPart(Alarms(), depth=2).start()
    gate = threading.Event()
    after.submit(gate.wait)  # taken by the worker
    after.submit(lambda: None)
    after.submit(lambda: None)  # the queue is now full
    third = threading.Thread(target=after.submit, args=(lambda: None,))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # the inspection thread would wait here: memory stays bounded, nothing is dropped
    gate.set()
    third.join(5)
    assert not third.is_alive()
    after.close()


def test_a_failing_job_raises_an_event_and_the_next_jobs_still_run():
    alarms, done = Alarms(), []
    after = AfterPart(alarms).start()
    after.submit(lambda: 1 / 0)
    after.submit(lambda: done.append("next"))
    assert after.flush(5)
    assert done == ["next"]
    assert any(a.name == "evidence" and "ZeroDivisionError" in a.message for a in alarms.active())
    after.close()


def test_without_a_running_worker_a_job_runs_at_once():
    after, done = AfterPart(Alarms()), []
    after.submit(lambda: done.append(threading.current_thread().name))  # never started (a part processed by hand)
    assert done == [threading.current_thread().name]
    after.start().close()
    after.submit(lambda: done.append("after close"))
    assert done[-1] == "after close"
    assert after.flush(0.1)  # nothing queued: at once
    t0 = time.monotonic()
    after.close()
    assert time.monotonic() - t0 < 1


def test_close_returns_while_a_job_hangs_and_the_queue_is_full():
    """A hung evidence disk must not keep the station from stopping (its outputs are made safe after this)."""
    after = AfterPart(Alarms(), depth=1).start()
    hang = threading.Event()
    after.submit(hang.wait)  # the worker is stuck in this job
    after.submit(lambda: None)  # the queue is full
    t0 = time.monotonic()
    assert after.flush(0.3) is False  # nor an API request that waits for the last parts' records
    after.close(timeout=0.3)
    assert time.monotonic() - t0 < 2
    hang.set()


def test_a_part_submitted_during_close_runs_after_the_queued_ones():
    order = []
    after = AfterPart(Alarms()).start()
    gate = threading.Event()
    after.submit(gate.wait)
    after.submit(lambda: order.append(1))
    closer = threading.Thread(target=after.close)
    closer.start()
    while not after._closing:
        time.sleep(0.001)
    late = threading.Thread(target=after.submit, args=(lambda: order.append(2),))
    late.start()
    time.sleep(0.05)
    gate.set()
    late.join(5)
    closer.join(5)
    assert order == [1, 2]
