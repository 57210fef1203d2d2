"""Image encodings and camera sources (no ROS)."""
import threading

import cv2
import numpy as np
import pytest

from nanovla_ros.camera.config import CameraConfig
from nanovla_ros.camera.image_codec import (
    ImageEncodingError,
    ImageFields,
    array_to_fields,
    convert_color,
    fields_to_array,
)
from nanovla_ros.camera.intrinsics import pinhole_k
from nanovla_ros.camera.sources import CameraOpenError, Frame, FramePump, SourceExhausted, open_source
from nanovla_ros.configuration import ConfigError


def _rgb(h=6, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_colour_round_trip(encoding):
    rgb = _rgb()
    fields = array_to_fields(convert_color(rgb, "rgb8", encoding), encoding)
    assert (fields.height, fields.width, fields.step) == (6, 8, 24)
    np.testing.assert_array_equal(fields_to_array(fields, "rgb8"), rgb)


def test_bgr8_is_channel_swapped_like_cv_bridge():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    fields = array_to_fields(convert_color(rgb, "rgb8", "bgr8"), "bgr8")
    assert fields.data == bytes([30, 20, 10])


def test_mono8_matches_opencv_luma():
    rgb = _rgb(16, 16)
    mono = convert_color(rgb, "rgb8", "mono8")
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.abs(mono.astype(int) - expected.astype(int)).max() <= 1


def test_row_padding_is_honoured():
    rgb = _rgb(4, 5)
    padded = np.zeros((4, 5 * 3 + 1), np.uint8)  # one padding byte per row
    padded[:, :15] = rgb.reshape(4, 15)
    fields = ImageFields(4, 5, "rgb8", 0, 16, padded.tobytes())
    np.testing.assert_array_equal(fields_to_array(fields), rgb)


@pytest.mark.parametrize("bad", [
    lambda: array_to_fields(_rgb(), "rgba16"),
    lambda: array_to_fields(_rgb().astype(np.float32), "rgb8"),
    lambda: array_to_fields(_rgb(), "mono8"),
    lambda: fields_to_array(ImageFields(4, 4, "rgb8", 0, 12, b"\0" * 10)),
    lambda: fields_to_array(ImageFields(4, 4, "rgb8", 0, 8, b"\0" * 48)),
])
def test_bad_images_raise(bad):
    with pytest.raises(ImageEncodingError):
        bad()


def test_pinhole_k():
    k = pinhole_k(640, 480, 90.0)
    assert k[0] == pytest.approx(320.0) and k[4] == pytest.approx(320.0)
    assert (k[2], k[5], k[8]) == (319.5, 239.5, 1.0)


def test_test_pattern_has_size_and_changes():
    source = open_source(CameraConfig(width=64, height=48))
    a, b = source.read(), source.read()
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)


def _write_images(folder, count):
    for i in range(count):
        image = np.full((20, 30, 3), i * 40, np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)


def test_image_folder_in_order_resized_and_looping(tmp_path):
    _write_images(tmp_path, 3)
    source = open_source(CameraConfig(source="folder", path=str(tmp_path), width=60, height=40))
    values = [int(source.read()[0, 0, 0]) for _ in range(4)]
    assert values == [0, 40, 80, 0]


def test_image_folder_without_loop_is_exhausted(tmp_path):
    _write_images(tmp_path, 1)
    source = open_source(CameraConfig(source="folder", path=str(tmp_path), loop=False))
    source.read()
    with pytest.raises(SourceExhausted):
        source.read()


def test_video_file_loops(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 60 * i, np.uint8))
    writer.release()
    source = open_source(CameraConfig(source="video", path=str(path), width=32, height=24))
    levels = [int(source.read().mean()) for _ in range(5)]
    assert levels[3] == pytest.approx(levels[0], abs=3) and levels[1] > levels[0] + 30


@pytest.mark.parametrize("config, message", [
    (CameraConfig(source="v4l2", device="/dev/video_does_not_exist"), "does not exist"),
    (CameraConfig(source="video", path="/nonexistent/clip.mp4"), "does not exist"),
    (CameraConfig(source="folder", path="/nonexistent"), "does not exist"),
])
def test_missing_sources_give_one_clear_error(config, message):
    with pytest.raises(CameraOpenError, match=message):
        open_source(config)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(CameraOpenError, match="holds no images"):
        open_source(CameraConfig(source="folder", path=str(tmp_path)))


@pytest.mark.parametrize("kwargs", [dict(source="webcam"), dict(width=4), dict(rate_hz=0.0),
                                    dict(encoding="rgba8"), dict(max_age_ms=-1.0), dict(source="video")])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        CameraConfig(**kwargs)


def test_frame_pump_drops_stale_frames():
    now = [1_000_000_000]
    delivered = []
    pump = FramePump(open_source(CameraConfig(width=32, height=32)), 30.0, 100.0, delivered.append,
                     lambda e: None, clock_ns=lambda: now[0])
    fresh = Frame(np.zeros((2, 2, 3), np.uint8), now[0] - 50_000_000, 0)  # 50 ms old
    stale = Frame(np.zeros((2, 2, 3), np.uint8), now[0] - 150_000_000, 1)  # 150 ms old
    assert pump.deliver(fresh) and not pump.deliver(stale)
    assert delivered == [fresh] and pump.dropped_stale == 1


def test_frame_pump_thread_delivers_and_stops():
    got = threading.Event()
    frames = []

    def on_frame(frame):
        frames.append(frame)
        if len(frames) >= 3:
            got.set()

    pump = FramePump(open_source(CameraConfig(width=32, height=32)), 200.0, 100.0, on_frame, lambda e: None)
    pump.start()
    assert got.wait(5.0)
    pump.stop()
    assert [f.sequence for f in frames[:3]] == [0, 1, 2]
    assert frames[1].capture_time_ns >= frames[0].capture_time_ns


def test_a_frame_reader_does_not_take_a_block_without_a_frame_size():
    """The workcell creates its shared block zeroed and writes the frame size just after; a camera node that
    attached in between read 0x0 frames, and its resize raised in the capture thread (seen in a graph run)."""
    import os
    from multiprocessing import shared_memory

    from nanovla_ros.transport.shared_frames import HEADER, SharedFrameReader

    name = f"nanovla_test_frames_{os.getpid()}"
    block = shared_memory.SharedMemory(name=name, create=True, size=HEADER.itemsize + 4 * 4 * 3)  # no size yet
    try:
        with pytest.raises(TimeoutError, match="no frame size"):
            SharedFrameReader(name, timeout_s=0.05)
        header = np.ndarray((1,), HEADER, block.buf[:HEADER.itemsize])
        header[0] = (2, 123, 4, 4)  # what the writer does: its size, then one complete frame
        reader = SharedFrameReader(name, timeout_s=1.0)
        frame, stamp_ns = reader.read()
        assert frame.shape == (4, 4, 3) and stamp_ns == 123
        reader.close()
        del header
    finally:
        block.close()
        block.unlink()


def test_an_unexpected_source_error_ends_the_pump_with_a_message():
    class Broken:
        paced = True

        def read(self):
            raise ValueError("bad frame")

        def close(self):
            pass

    errors = []
    done = threading.Event()
    pump = FramePump(Broken(), 30.0, 100.0, lambda frame: None, lambda e: (errors.append(e), done.set()))
    pump.start()
    assert done.wait(5.0)
    pump.stop()
    assert isinstance(errors[0], CameraOpenError) and "ValueError: bad frame" in str(errors[0])
