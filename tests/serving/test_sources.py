"""Frame sources: replay pacing and sequence numbers, drops, corrupt frames, camera reconnects."""

import time

import cv2
import numpy as np

from serving.alarms import Alarms
from serving.lineio.cameras import ReplayCamera
from serving.lineio.live_camera import LiveCamera
from serving.lineio.capture import FrameSource
from serving.lineio.triggers import FreeRunTrigger, HttpTrigger


def folder(tmp_path, n=6, corrupt=False):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i:03d}.png"), np.full((32, 32, 3), i * 20, np.uint8))
    if corrupt:
        (d / "002.png").write_bytes(b"garbage")
    return d


def drain(src):
    out = []
    while (f := src.get(timeout=5)) is not None:
        out.append(f)
    return out


def test_replay_gives_sequence_numbers_monotonic_triggers_and_paces(tmp_path):
    src = FrameSource(ReplayCamera(folder(tmp_path)), FreeRunTrigger(50.0), queue_size=16).start()
    frames = drain(src)
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5, 6]
    t = [f.t_trigger_ns for f in frames]
    assert all(b > a for a, b in zip(t, t[1:]))
    assert (t[-1] - t[0]) / 1e6 >= 5 * 20 * 0.9  # 50 Hz pacing
    assert all(f.t_capture_ns >= f.t_trigger_ns for f in frames)


def test_corrupt_frame_is_an_error_frame_not_a_crash(tmp_path):
    frames = drain(FrameSource(ReplayCamera(folder(tmp_path, corrupt=True)), FreeRunTrigger(200.0), 16).start())
    bad = [f for f in frames if f.error]
    assert len(frames) == 6 and len(bad) == 1 and bad[0].error == "corrupt_frame" and "002.png" in bad[0].error_detail


def test_a_slow_consumer_drops_images_but_every_part_still_gets_a_verdict(tmp_path):
    src = FrameSource(ReplayCamera(folder(tmp_path, n=12)), FreeRunTrigger(500.0), queue_size=2).start()
    time.sleep(0.3)  # nobody consumes meanwhile
    frames = drain(src)
    missing = [f for f in frames if f.error == "missing_frame"]
    assert src.dropped > 0 and len(missing) == src.dropped
    assert all(f.image is None and "fell behind" in f.error_detail for f in missing)
    assert sorted(f.seq for f in frames) == list(range(1, 13))  # no part is lost


def test_http_trigger_timestamps_on_arrival(tmp_path):
    trig = HttpTrigger()
    src = FrameSource(ReplayCamera(folder(tmp_path, n=2)), trig, queue_size=4).start()
    t = time.monotonic_ns()
    trig.fire()
    f = src.get(timeout=2)
    assert f.seq == 1 and f.t_trigger_ns >= t and f.t_capture_ns >= f.t_trigger_ns
    src.stop()


def test_a_camera_file_that_appears_later_is_opened_by_the_grabber_without_blocking_anyone(tmp_path):
    video = tmp_path / "cam.avi"
    alarms = Alarms()
    cam = LiveCamera(str(video), alarms, watchdog_s=0.2, reconnect_max_s=0.1, max_frame_age_ms=50).start()
    t = time.monotonic()
    assert cam.take(time.monotonic_ns()).error == "missing_frame" and time.monotonic() - t < 0.2
    deadline = time.monotonic() + 3
    while not alarms.is_active("camera") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert alarms.is_active("camera") and cam.reconnects >= 1
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for _ in range(30):
        w.write(np.full((24, 32, 3), 128, np.uint8))
    w.release()
    shot = None
    while time.monotonic() < deadline + 3:
        shot = cam.take(time.monotonic_ns())
        if shot.image is not None:
            break
    cam.stop()
    assert shot.image.shape == (24, 32, 3) and shot.error is None


def test_preloaded_replay_hands_over_the_same_pixels_without_reading_files(tmp_path):
    d = folder(tmp_path, corrupt=True)
    cam = ReplayCamera(d, preload_mb=1)
    assert ReplayCamera(d).decoded is None  # the default decodes per trigger
    for f in d.iterdir():  # decoded at start: the files are no longer needed
        f.unlink()
    for i in range(6):
        shot = cam.take(0)
        assert shot.name == f"{i:03d}.png"
        if i == 2:  # a corrupt file stays a corrupt frame, naming the file
            assert shot.image is None and shot.error == "corrupt_frame" and "002.png" in shot.detail
            continue
        assert shot.image[0, 0].tolist() == [i * 20] * 3 and not shot.image.flags.writeable


def test_preload_refuses_a_folder_over_its_limit_and_a_video(tmp_path):
    import pytest

    from serving.errors import ImageError
    from serving.lineio.config import SourceConfig

    d = tmp_path / "big"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.zeros((400, 400, 3), np.uint8))  # 0.46 MiB each decoded
    with pytest.raises(ImageError, match=r"big: the decoded images exceed source.preload_mb \(1 MiB\) at 2.png"):
        ReplayCamera(d, preload_mb=1)
    assert len(ReplayCamera(d, preload_mb=2).decoded) == 3
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 32))
    w.write(np.zeros((32, 32, 3), np.uint8))
    w.release()
    with pytest.raises(ImageError, match="preload_mb applies to a folder"):
        ReplayCamera(video, preload_mb=1)
    with pytest.raises(ValueError, match="preload_mb applies to kind 'replay'"):
        SourceConfig(kind="opencv", device=0, preload_mb=10)
