"""A calibration of the front camera's view for each episode of an evaluation (no ROS).

What a user does once for their cell (`nanovla calibrate-view`: find table points in their camera's frame and in
the training view), done here for every episode whose camera was moved (a random look, `--perturb
random_camera`): the table points are projected in the training workcell and again under the episode's look, each
found with a Gaussian error of ``click_noise_px`` as a person clicking them, and the homography between them is
what the policy's frames are warped by (`ViewWarp`, the policy node's `view_homography`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanovla_ros.configuration import param, require

PLANE_Z_M = 0.015  # the cubes' mid-height: where an exact calibration is fitted


@dataclass(frozen=True)
class ViewCalibration:
    clicks: int = param(4, "Table points found in both views (4-8: the workspace's corners 5 cm out, then its "
                           "mid-edges, on the table); 0: an exact calibration from 16 points of the cubes' mid-height "
                           "plane, without error.")
    click_noise_px: float = param(1.0, "Each point's error in both views, pixels of a 224-pixel frame (with clicks).")

    def __post_init__(self) -> None:
        require(self.clicks == 0 or 4 <= self.clicks <= 8, f"clicks={self.clicks} must be 0 or within [4, 8]")
        require(self.click_noise_px >= 0.0, f"click_noise_px={self.click_noise_px} must be >= 0")

    def points_m(self) -> np.ndarray:
        """(N, 3) world points the calibration is made from."""
        from nanovla_ros.sim.workcell import WORKSPACE

        (x0, y0), (x1, y1) = WORKSPACE
        if not self.clicks:
            return np.array([[x, y, PLANE_Z_M] for x in np.linspace(x0 - 0.05, x1 + 0.05, 4)
                             for y in np.linspace(y0 - 0.05, y1 + 0.05, 4)])
        xs, ys = (x0 - 0.05, x1 + 0.05, (x0 + x1) / 2), (y0 - 0.05, y1 + 0.05, (y0 + y1) / 2)
        table = [(xs[0], ys[0]), (xs[1], ys[0]), (xs[1], ys[1]), (xs[0], ys[1]),
                 (xs[2], ys[0]), (xs[1], ys[2]), (xs[2], ys[1]), (xs[0], ys[2])]
        return np.array([[x, y, 0.0] for x, y in table[:self.clicks]])

    def found(self, workcell, rng: np.random.Generator, size: int = 224) -> np.ndarray:
        """(N, 2) where the front camera, as it is now, sees the points, as they are found (with the error)."""
        points = self.points_m()
        noise = self.click_noise_px if self.clicks else 0.0
        return workcell.project(points, "front", size) + rng.normal(0.0, noise, (len(points), 2))


def homography(training_px: np.ndarray, moved_px: np.ndarray) -> tuple[float, ...]:
    """The row-major homography from the moved camera's view to the training view (``ViewWarp``'s)."""
    from nanovla_ros.model.view_warp import homography_from_points

    return tuple(homography_from_points(moved_px, training_px).ravel().tolist())
