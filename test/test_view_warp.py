"""Warping a moved camera's view back to the training view (nanovla_ros/model/view_warp.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from nanovla_ros.model.view_warp import IDENTITY, ViewWarp, homography_from_points


def scene() -> np.ndarray:
    """A tabletop-like frame: a checkered table (16-pixel cells) with three coloured squares (uint8, 224 x 224)."""
    y, x = np.mgrid[:224, :224]
    frame = np.where(((x // 16 + y // 16) % 2 == 0)[..., None], (200, 170, 120), (150, 120, 80)).astype(np.uint8)
    for (cx, cy), colour in zip(((60, 80), (140, 100), (100, 160)), ((200, 30, 30), (30, 200, 30), (30, 30, 200)),
                                strict=True):
        frame[cy - 12:cy + 12, cx - 12:cx + 12] = colour
    return frame


def test_a_view_moved_by_a_known_homography_is_brought_back_from_four_clicked_points():
    training = scene()
    moved_by = np.array([[1.04, 0.05, -9.0], [-0.03, 0.98, 6.0], [1e-4, -5e-5, 1.0]])  # a camera turned and shifted
    moved = cv2.warpPerspective(training, moved_by, (224, 224), borderMode=cv2.BORDER_REPLICATE)
    # four table points as a user clicks them: where they are in the training frame and in the moved camera's
    training_px = np.array([[30.0, 30.0], [190.0, 40.0], [180.0, 200.0], [40.0, 190.0]])
    camera_px = cv2.perspectiveTransform(training_px[None], moved_by)[0]
    warp = ViewWarp(tuple(homography_from_points(camera_px, training_px).ravel()))
    assert warp.mode == "warp"
    out = warp({"front": moved, "wrist": moved})
    inner = (slice(20, 204), slice(20, 204))  # away from the replicated border
    assert np.abs(out["front"][inner].astype(int) - training[inner]).mean() < 3.0
    assert np.abs(moved[inner].astype(int) - training[inner]).mean() > 10.0  # it was far off before
    assert out["wrist"] is moved  # only the camera it was made for


def test_the_homography_scales_with_the_frame_it_is_applied_to():
    training = cv2.resize(scene(), (448, 448), interpolation=cv2.INTER_NEAREST)
    shift = np.array([[1.0, 0.0, 6.0], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]])  # pixels of a 224 frame
    moved = cv2.warpPerspective(training, np.diag([2.0, 2.0, 1.0]) @ shift @ np.diag([0.5, 0.5, 1.0]), (448, 448))
    back = ViewWarp(tuple(np.linalg.inv(shift).ravel()))({"front": moved})["front"]
    assert np.abs(back[40:408, 40:408].astype(int) - training[40:408, 40:408]).mean() < 3.0


def test_identity_is_off_and_bad_homographies_or_points_are_refused():
    frame = scene()
    assert ViewWarp().mode == "off" and ViewWarp(IDENTITY)({"front": frame})["front"] is frame
    with pytest.raises(ValueError, match="homography"):
        ViewWarp((1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # singular
    with pytest.raises(ValueError, match="homography"):
        ViewWarp((1.0, 0.0, float("nan"), 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="N >= 4"):
        homography_from_points(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="do not determine"):
        line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        homography_from_points(line, line)


def test_calibrate_view_prints_the_parameter_the_policy_node_takes(capsys):
    import yaml

    from nanovla_ros.cli import main
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.policy.config import PolicyNodeConfig

    # a 640 x 480 camera that sees the training view's table points shifted and scaled
    training = np.array([[30.0, 30.0], [190.0, 40.0], [180.0, 200.0], [40.0, 190.0], [110.0, 110.0]])
    camera = (training * 0.9 + 12.0) * np.array([640 / 224, 480 / 224])
    code = main(["calibrate-view", "--camera-px", *[f"{x},{y}" for x, y in camera],
                 "--training-px", *[f"{x},{y}" for x, y in training]])
    out = capsys.readouterr().out
    assert code == 0 and "error after the warp" in out
    line = next(row for row in out.splitlines() if row.startswith("view_homography:"))
    h = np.array(yaml.safe_load(line)["view_homography"]).reshape(3, 3)
    assert np.allclose(h, [[1 / 0.9, 0, -12 / 0.9], [0, 1 / 0.9, -12 / 0.9], [0, 0, 1]], atol=1e-3)
    config = PolicyNodeConfig(view_homography=tuple(h.ravel()))  # what the node reads from that line
    assert ViewWarp(tuple(config.view_homography)).mode == "warp" and PolicyNodeConfig().view_homography == IDENTITY
    with pytest.raises(ConfigError, match="view_homography"):
        PolicyNodeConfig(view_homography=(1.0, 0.0))
    assert main(["calibrate-view", "--camera-px", "1,1", "2,2", "3,3", "4,4",
                 "--training-px", "1,1", "2,2", "3,3", "4,4"]) == 2  # on one line: no homography


def test_the_workcell_marks_are_where_the_training_camera_sees_them_and_calibrate_view_defaults_to_them(capsys):
    from nanovla_ros.cli import main
    from nanovla_ros.model.view_warp import WORKCELL_MARKS_M, WORKCELL_MARKS_PX
    from nanovla_ros.sim.perturbation import apply, parse
    from nanovla_ros.sim.workcell import Workcell

    workcell = Workcell()
    try:
        marks = np.array([[x, y, 0.0] for x, y in WORKCELL_MARKS_M])
        assert np.allclose(workcell.project(marks, "front", 224), WORKCELL_MARKS_PX, atol=0.1)
        undo = apply(workcell, parse("camera_turn_deg=5"))
        turned = workcell.project(marks, "front", 640)  # a 640 x 640 camera turned 5 degrees
        undo()
    finally:
        workcell.close()
    assert main(["calibrate-view", "--camera-size", "640x640", "--camera-px", *[f"{x},{y}" for x, y in turned]]) == 0
    out = capsys.readouterr().out
    assert "leave view_homography" not in out  # turned 5 degrees: a warp worth making
    line = next(row for row in out.splitlines() if row.startswith("view_homography:"))
    h = np.array([float(v) for v in line.split("[")[1].rstrip("]").split(",")]).reshape(3, 3)
    back = np.c_[turned * 224 / 640, np.ones(4)] @ h.T
    assert np.allclose(back[:, :2] / back[:, 2:], WORKCELL_MARKS_PX, atol=0.05)
    # marks found within a pixel of where the training camera sees them: the camera has not moved, leave it off
    near = np.asarray(WORKCELL_MARKS_PX) + np.array([[0.6, -0.4], [-0.5, 0.5], [0.4, 0.6], [-0.6, -0.3]])
    assert main(["calibrate-view", "--camera-size", "224x224", "--camera-px", *[f"{x},{y}" for x, y in near]]) == 0
    assert "leave view_homography at the identity" in capsys.readouterr().out
    assert main(["calibrate-view", "--camera-px", "1,2", "3,4", "5,7", "9,1", "4,4"]) == 2  # five for four marks


def test_a_random_camera_look_moves_only_the_camera_and_is_the_same_for_a_seed():
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.sim.perturbation import Perturbation, RandomisationConfig, parse, random_look

    looks = [random_look("random_camera", seed) for seed in range(1000, 1020)]
    assert looks[0] == parse("random_camera", 1000) and looks[0] != looks[1]
    limits = RandomisationConfig()
    for look in looks:
        assert max(abs(v) for v in look.camera_shift_m) <= limits.camera_shift_m
        assert abs(look.camera_turn_deg) <= limits.camera_turn_deg
        assert abs(look.camera_fov_change_deg) <= limits.camera_fov_change_deg
        camera_only = {"camera_shift_m", "camera_turn_deg", "camera_fov_change_deg"}
        assert all(getattr(look, k) == getattr(Perturbation(), k) for k in Perturbation.__dataclass_fields__
                   if k not in camera_only)
    everything = parse("random", 1000)  # the workcell node's look "random": every family drawn
    assert everything.camera_shift_m == looks[0].camera_shift_m and everything.light_scale != 1.0
    with pytest.raises(ConfigError, match="random look"):
        random_look("random_light", 1000)


def test_an_evaluation_calibrates_each_moved_camera_and_the_policy_reads_the_training_view():
    """``run_policy_episode(..., view_calibration=...)``: for an episode whose front camera was moved (a random
    look), the homography from table points found in both views brings the moved frame back to the training one:
    what the policy reads is nearer the unmoved render than what the moved camera sees."""
    from conftest import AnyInstruction, StillPolicy

    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.evaluation.closed_loop import run_policy_episode
    from nanovla_ros.evaluation.view_calibration import ViewCalibration, homography
    from nanovla_ros.sim.perturbation import apply, parse
    from nanovla_ros.sim.workcell import Workcell

    policy = StillPolicy()
    workcell = Workcell()
    try:
        seed = next(s for s in range(1000, 1100) if max(abs(v) for v in parse("random_camera", s).camera_shift_m) > 0.02)
        calibration = ViewCalibration(clicks=0)
        rng = np.random.default_rng(0)
        training_px = calibration.found(workcell, rng)
        undo = apply(workcell, parse("random_camera", seed))
        moved_px = calibration.found(workcell, rng)
        undo()
        h = np.asarray(homography(training_px, moved_px)).reshape(3, 3)
        back = cv2.perspectiveTransform(moved_px[None], h)[0]
        assert np.abs(back - training_px).max() < 0.5  # exact points: the warp maps them home
        for look in ("", "random_camera"):  # the same scene seen by the training camera, then the moved one
            run_policy_episode(workcell, policy, AnyInstruction(), "touch", "train", seed, 10, max_steps=1, perturb=look)
        run_policy_episode(workcell, policy, AnyInstruction(), "touch", "train", seed, 10, max_steps=1,
                           perturb="random_camera", view_calibration=ViewCalibration(clicks=4))
    finally:
        workcell.close()
    nominal, moved, warped = (f["front"].astype(float) for f in policy.frames)
    as_moved, as_warped = np.abs(moved - nominal).mean(), np.abs(warped - nominal).mean()
    assert as_warped < 0.6 * as_moved, (as_moved, as_warped)
    with pytest.raises(ConfigError, match="clicks"):
        ViewCalibration(clicks=3)
