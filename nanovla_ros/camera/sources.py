"""Frame sources for the camera node: V4L2/USB (OpenCV), a looping video file, an image folder and
a generated test pattern. No ROS imports: the node wraps these.

Every source yields RGB uint8 arrays of shape (H, W, 3) together with the wall-clock time at which
the frame was captured, which becomes the message stamp.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from nanovla_ros.camera.config import CameraConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")


class CameraOpenError(RuntimeError):
    """The configured source cannot be opened (missing device, unreadable file, empty folder)."""


class SourceExhausted(RuntimeError):
    """A non-looping file source has no more frames."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    capture_time_ns: int  # wall clock (time.time_ns) when the frame was captured
    sequence: int


class FrameSource(Protocol):
    """What the camera node needs from a source."""

    def read(self) -> np.ndarray:
        """Block until the next frame; return it as (H, W, 3) uint8 RGB."""

    def close(self) -> None: ...

    @property
    def paced(self) -> bool:
        """True when read() itself blocks at the device's frame rate (a real camera)."""


def _fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


class TestPatternSource:
    """Colour bars with a moving gradient band and a frame counter: cheap, deterministic and
    visibly alive, so a frozen pipeline is obvious in a viewer."""

    paced = False

    def __init__(self, width: int, height: int) -> None:
        self._width, self._height = width, height
        bar_colours = np.array(
            [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
             [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]], dtype=np.uint8)
        bar_index = (np.arange(width) * len(bar_colours)) // width  # (W,)
        self._bars = np.broadcast_to(bar_colours[bar_index][None], (height, width, 3)).copy()
        self._count = 0

    def read(self) -> np.ndarray:
        frame = self._bars.copy()  # (H, W, 3)
        band_h = max(1, self._height // 8)
        top = (self._count * 4) % max(1, self._height - band_h)
        ramp = np.linspace(0, 255, self._width, dtype=np.uint8)  # (W,)
        frame[top:top + band_h] = ramp[None, :, None]
        cv2.putText(frame, f"nanovla_ros {self._count:06d}", (8, self._height - 12),
                    cv2.FONT_HERSHEY_SIMPLEX, max(0.4, self._width / 1280), (255, 255, 255), 1)
        self._count += 1
        return frame

    def close(self) -> None:
        pass


class ImageFolderSource:
    """The images of a folder in name order, resized to the configured size."""

    paced = False

    def __init__(self, folder: str, width: int, height: int, loop: bool) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise CameraOpenError(f"image folder {folder!r} does not exist; set `path` to a folder of images")
        self._files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraOpenError(f"image folder {folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self._width, self._height, self._loop = width, height, loop
        self._index = 0

    def read(self) -> np.ndarray:
        if self._index >= len(self._files):
            if not self._loop:
                raise SourceExhausted(f"image folder: all {len(self._files)} images were published")
            self._index = 0
        path = self._files[self._index]
        self._index += 1
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CameraOpenError(f"cannot decode image {str(path)!r}")
        return _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._width, self._height)

    def close(self) -> None:
        pass


class _OpenCvCapture:
    """Shared by the video-file and V4L2 sources."""

    def __init__(self, capture: cv2.VideoCapture, what: str, width: int, height: int) -> None:
        self._capture, self._what = capture, what
        self._width, self._height = width, height

    def _grab(self) -> np.ndarray | None:
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            return None
        return _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._width, self._height)

    def close(self) -> None:
        self._capture.release()


class VideoFileSource(_OpenCvCapture):
    paced = False

    def __init__(self, path: str, width: int, height: int, loop: bool) -> None:
        if not Path(path).is_file():
            raise CameraOpenError(f"video file {path!r} does not exist; set `path` to a video file")
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise CameraOpenError(f"OpenCV cannot open video file {path!r} (unsupported codec?)")
        super().__init__(capture, path, width, height)
        self._loop = loop

    def read(self) -> np.ndarray:
        frame = self._grab()
        if frame is None and self._loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            frame = self._grab()
        if frame is None:
            raise SourceExhausted(f"video file {self._what!r} ended")
        return frame


class V4l2Source(_OpenCvCapture):
    """A USB/V4L2 camera through OpenCV. read() blocks at the camera's own frame rate."""

    paced = True

    def __init__(self, device: str, width: int, height: int, rate_hz: float) -> None:
        target: int | str = int(device) if device.isdigit() else device
        if isinstance(target, str) and not Path(target).exists():
            raise CameraOpenError(
                f"camera device {device!r} does not exist; plug the camera in or set `device` "
                "(e.g. /dev/video0), or use source:=test_pattern"
            )
        capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if not capture.isOpened():
            raise CameraOpenError(f"cannot open camera {device!r} with V4L2 (busy, or not a capture device?)")
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, rate_hz)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing old frames
        super().__init__(capture, device, width, height)

    def read(self) -> np.ndarray:
        frame = self._grab()
        if frame is None:
            raise CameraOpenError(f"camera {self._what!r} stopped delivering frames")
        return frame


class SimulatedCameraSource:
    """Frames rendered by the workcell process, read from its shared-memory block (see nanovla_ros.transport.shared_frames).
    The capture time is the render time, so age checks see how old the picture really is. When frames stop,
    the block is attached again (a restarted workcell makes a new one under the same name)."""

    paced = True  # read() waits for the next rendered frame

    def __init__(self, name: str, width: int, height: int, reattach_s: float = 1.0, give_up_s: float = 60.0) -> None:
        self._name, self._width, self._height = name, width, height
        self._reattach_s, self._give_up_s = reattach_s, give_up_s
        self._reader = self._attach(timeout_s=60.0)  # the workcell may still be starting (mujoco, meshes, GL)
        self.last_capture_ns: int | None = None

    def _attach(self, timeout_s: float):
        from nanovla_ros.transport.shared_frames import SharedFrameReader

        try:
            return SharedFrameReader(self._name, timeout_s=timeout_s)
        except FileNotFoundError:
            raise CameraOpenError(f"no workcell frames under {self._name!r}: is the workcell running?") from None
        except TimeoutError as error:
            raise CameraOpenError(f"workcell frames under {self._name!r}: {error}") from None

    def read(self) -> np.ndarray:
        start = last_attach = time.monotonic()
        while True:
            got = self._reader.read()
            if got is not None:
                rgb, self.last_capture_ns = got
                return _fit(rgb, self._width, self._height)
            now = time.monotonic()
            if now - start > self._give_up_s:
                raise CameraOpenError(f"the workcell sent no frame for {self._give_up_s:g} s")
            if now - last_attach > self._reattach_s:
                self._reader.close()
                self._reader = self._attach(timeout_s=self._give_up_s)
                last_attach = now
            time.sleep(0.002)  # polling the shared block: frames come at the workcell's 30 Hz

    def close(self) -> None:
        self._reader.close()


def open_source(config: CameraConfig) -> FrameSource:
    """Open the source named by ``config.source``; raise CameraOpenError with the reason."""
    if config.source == "test_pattern":
        return TestPatternSource(config.width, config.height)
    if config.source == "folder":
        return ImageFolderSource(config.path, config.width, config.height, config.loop)
    if config.source == "video":
        return VideoFileSource(config.path, config.width, config.height, config.loop)
    if config.source == "sim":
        return SimulatedCameraSource(config.path, config.width, config.height)
    return V4l2Source(config.device, config.width, config.height, config.rate_hz)


class FramePump:
    """Reads a source on its own thread and hands fresh frames to ``on_frame``.

    Capture is kept off the ROS executor (a blocking V4L2 read would stall it). A frame that is
    older than ``max_age_ms`` by the time it would be handed over is dropped and counted, never
    delivered. Sources that do not pace themselves (files, test pattern) are read at ``rate_hz``.
    """

    def __init__(self, source: FrameSource, rate_hz: float, max_age_ms: float,
                 on_frame: Callable[[Frame], None],
                 on_error: Callable[[Exception], None],
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._source, self._period_s = source, 1.0 / rate_hz
        self._max_age_ns = int(max_age_ms * 1e6)
        self._on_frame, self._on_error, self._clock_ns = on_frame, on_error, clock_ns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame_pump", daemon=True)
        self.published = 0
        self.dropped_stale = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self._source.close()

    def deliver(self, frame: Frame) -> bool:
        """Hand ``frame`` over unless it is stale; return whether it was delivered."""
        age_ns = self._clock_ns() - frame.capture_time_ns
        if age_ns > self._max_age_ns:
            self.dropped_stale += 1
            return False
        self._on_frame(frame)
        self.published += 1
        return True

    def _run(self) -> None:
        next_due = time.monotonic()
        sequence = 0
        while not self._stop.is_set():
            if not self._source.paced:
                # Rate limiting for self-paced sources; Event.wait returns early on stop().
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_due = max(next_due + self._period_s, time.monotonic() - self._period_s)
            try:
                rgb = self._source.read()
            except (CameraOpenError, SourceExhausted) as error:
                self._on_error(error)
                return
            except Exception as error:  # noqa: BLE001  anything else ends the capture too, but said, not silently
                self._on_error(CameraOpenError(f"the camera source failed: {type(error).__name__}: {error}"))
                return
            captured = getattr(self._source, "last_capture_ns", None)  # sources that know their capture time
            self.deliver(Frame(rgb, captured if captured is not None else self._clock_ns(), sequence))
            sequence += 1
