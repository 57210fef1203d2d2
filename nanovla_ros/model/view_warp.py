"""Bringing a camera's view back to the view the policy was trained with (no ROS).

A policy trained with the front camera in one place reads the scene's pixels, not the scene: the shipped model
falls from 21 to 10 of 24 episodes with the camera moved 2 cm. Where the new camera's pose is known (calibrated),
the table plane seen by it maps onto the training view by one homography (3 x 3); ``ViewWarp`` warps that camera's
frames through it before the policy. Exact for points on the plane it was made for (the table), near for the
cubes on it; the arm itself, far above the table, keeps some parallax. ``homography_from_points`` makes one from
four or more pixel pairs (the same table points in a training frame and in the new camera's frame), as a user
calibrates it (`nanovla calibrate-view`). Measured: ``scripts/eval/probe_view_warp.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Four table marks (x forward, y left of the arm's base, metres; the workspace's corners, 5 cm out) and where the
# simulated workcell's front camera, the one the shipped policy was trained with, sees them (pixels of a 224 x 224
# frame; Workcell.project). Tape marks there, find them in your camera's frame: `nanovla calibrate-view`.
WORKCELL_MARKS_M = ((0.09, -0.21), (0.34, -0.21), (0.34, 0.21), (0.09, 0.21))
WORKCELL_MARKS_PX = ((17.1, 149.8), (108.6, 212.8), (191.2, 83.2), (116.7, 52.7))


def homography_from_points(camera_px: np.ndarray, training_px: np.ndarray) -> np.ndarray:
    """(3, 3) homography taking pixels of the new camera to the training view's, from N >= 4 pairs ((N, 2) each,
    at the frames' own size); least squares over all pairs. ValueError for fewer or degenerate pairs."""
    import cv2

    camera_px, training_px = np.asarray(camera_px, np.float64), np.asarray(training_px, np.float64)
    if camera_px.shape != training_px.shape or camera_px.ndim != 2 or camera_px.shape[1] != 2 or len(camera_px) < 4:
        raise ValueError(f"need N >= 4 pixel pairs, (N, 2) each; got {camera_px.shape} and {training_px.shape}")
    for points in (camera_px, training_px):  # all on one line: no plane to map
        spread = np.linalg.svd(points - points.mean(0), compute_uv=False)
        if spread[-1] < 1e-3 * max(spread[0], 1e-9):
            raise ValueError("the pixel pairs do not determine a homography: the points lie on one line")
    h, _ = cv2.findHomography(camera_px, training_px, 0)
    if h is None or not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-9:
        raise ValueError("the pixel pairs do not determine a homography (three or more on one line?)")
    return h / h[2, 2]


@dataclass(frozen=True)
class ViewWarp:
    """Warps ``camera``'s frames by ``homography`` (row-major 3 x 3, pixels of a frame ``size_px`` wide; scaled to
    the frame's own size). Same call as ``FrameGain`` (``mode`` "off" for the identity)."""

    homography: tuple[float, ...] = IDENTITY
    camera: str = "front"
    size_px: tuple[int, int] = (224, 224)  # (width, height) the homography's pixels refer to

    def __post_init__(self) -> None:
        h = np.asarray(self.homography, np.float64)
        if h.shape != (9,) or not np.all(np.isfinite(h)) or abs(np.linalg.det(h.reshape(3, 3))) < 1e-9:
            raise ValueError(f"homography={self.homography} must be 9 finite numbers of an invertible 3 x 3 matrix")

    @property
    def mode(self) -> str:
        return "off" if np.allclose(self.homography, IDENTITY) else "warp"

    def __call__(self, frames: dict[str, np.ndarray], reference_camera: str = "") -> dict[str, np.ndarray]:
        import cv2

        if self.mode == "off" or self.camera not in frames:
            return frames
        frame = frames[self.camera]
        sx, sy = frame.shape[1] / self.size_px[0], frame.shape[0] / self.size_px[1]
        scale = np.diag([sx, sy, 1.0])
        h = scale @ np.asarray(self.homography, np.float64).reshape(3, 3) @ np.linalg.inv(scale)
        warped = cv2.warpPerspective(frame, h, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        return {**frames, self.camera: warped}
