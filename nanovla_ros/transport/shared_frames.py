"""Camera frames from the physics process to the camera node through shared memory (no ROS).

One writer (the workcell process), any number of readers (camera nodes). The block holds a header
(sequence number, capture time in ns, height, width) and one RGB frame; a reader copies the frame and
checks the sequence number did not change while it copied (seqlock), so it never returns a torn frame.
"""
from __future__ import annotations

import time
from multiprocessing import shared_memory

import numpy as np

HEADER = np.dtype([("seq", "<u8"), ("stamp_ns", "<u8"), ("height", "<u4"), ("width", "<u4")])


class SharedFrameWriter:
    def __init__(self, name: str, height: int, width: int) -> None:
        size = HEADER.itemsize + height * width * 3
        try:
            stale = shared_memory.SharedMemory(name=name)  # left by a killed run
            stale.close()
            stale.unlink()
        except FileNotFoundError:
            pass
        self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        self._header = np.ndarray((1,), HEADER, self._shm.buf[:HEADER.itemsize])
        self._frame = np.ndarray((height, width, 3), np.uint8, self._shm.buf[HEADER.itemsize:])
        self._header[0] = (0, 0, height, width)
        self.name = name

    def write(self, rgb: np.ndarray, stamp_ns: int) -> None:
        seq = int(self._header[0]["seq"])
        self._header[0]["seq"] = seq + 1  # odd: writing
        self._frame[:] = rgb
        self._header[0]["stamp_ns"] = stamp_ns
        self._header[0]["seq"] = seq + 2  # even: complete

    def close(self) -> None:
        self._header = self._frame = None  # views into the block go before it closes
        self._shm.close()
        self._shm.unlink()


class SharedFrameReader:
    def __init__(self, name: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._shm = shared_memory.SharedMemory(name=name)
                break
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the workcell process is still starting
        # Python < 3.13 registers attached blocks with the resource tracker, which would unlink the
        # writer's block when this reader exits: only the writer owns it.
        from multiprocessing import resource_tracker

        resource_tracker.unregister(self._shm._name, "shared_memory")  # noqa: SLF001
        self._header = np.ndarray((1,), HEADER, self._shm.buf[:HEADER.itemsize])
        # The writer creates the block (zeroed) and then writes its size: a reader that attaches in between
        # must wait for the size, or it reads empty frames (seen: a camera node resized a 0x0 frame and died).
        while not (int(self._header[0]["height"]) and int(self._header[0]["width"])):
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"shared frame block {name!r} has no frame size after {timeout_s:g} s")
            time.sleep(0.005)
        h, w = int(self._header[0]["height"]), int(self._header[0]["width"])
        self._frame = np.ndarray((h, w, 3), np.uint8, self._shm.buf[HEADER.itemsize:])
        self._last_seq = 0

    def read(self) -> tuple[np.ndarray, int] | None:
        """The newest complete frame and its capture time, or None if there is no new one."""
        for _ in range(5):
            seq = int(self._header[0]["seq"])
            if seq == self._last_seq or seq % 2:
                return None
            frame, stamp = self._frame.copy(), int(self._header[0]["stamp_ns"])
            if int(self._header[0]["seq"]) == seq:
                self._last_seq = seq
                return frame, stamp
        return None

    def close(self) -> None:
        self._header = self._frame = None  # views into the block go before it closes
        self._shm.close()
