"""LeRobot v3.0 datasets checked against the real ``lerobot`` package (its own venv, `make lerobot-venv`): our export
opens with ``LeRobotDataset`` and every frame loads; a dataset written by lerobot's own writer imports into our
shards, episode by episode, and trains. Skipped, saying why, only where lerobot cannot be installed."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanovla_ros.data.demos import load_demonstrations
from nanovla_ros.data.lerobot_format import export_lerobot, import_lerobot, to_lerobot_units
from nanovla_ros.driver.calibration import default_calibration
from nanovla_ros.driver.config import SO101_JOINTS

sys.path.insert(0, str(Path(__file__).parent))
from test_dataset import COLOURS, write_episode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "lerobot"


@pytest.fixture(scope="module")
def lerobot_python() -> str:
    python = ROOT / ".venv-lerobot" / "bin" / "python"
    if not (python.exists() and (ROOT / ".venv-lerobot" / ".lerobot-0.6.1").exists()):
        pytest.skip("the real lerobot package is not installed (it needs Python >= 3.12 and the package index): "
                    "run `make lerobot-venv`")
    return str(python)


def run_lerobot(python: str, *args: str) -> str:
    out = subprocess.run([python, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cal") / "so101_follower.json"
    default_calibration(SO101_JOINTS).save(path)
    return path


@pytest.mark.parametrize("videos", [True, False], ids=["videos", "images"])
def test_our_export_opens_in_lerobot_and_every_frame_loads(lerobot_python, calibration_file, tmp_path, videos):
    text = calibration_file.read_text()
    write_episode(tmp_path / "bags" / "ep0", calibration=text, wrist_gap=(99, 99))
    write_episode(tmp_path / "bags" / "ep1", calibration=text, wrist_gap=(99, 99), instruction="push the blue cube")
    summary = export_lerobot(tmp_path / "bags", tmp_path / "lerobot", videos=videos, progress=False)
    assert summary["episodes"] == 2 and summary["frames"] == 150 and summary["cameras"] == ["front", "wrist"]
    seen = json.loads(run_lerobot(lerobot_python, str(SCRIPTS / "lerobot_load.py"), str(tmp_path / "lerobot")))
    assert seen["codebase_version"] == "v3.0" and seen["total_episodes"] == 2 and seen["frames_read"] == 150
    assert seen["cameras"] == ["observation.images.front", "observation.images.wrist"]
    assert seen["state_names"][0] == "shoulder_pan.pos" and seen["robot_type"] == "so101_follower"
    for stats in seen["stats_keys"].values():  # LeRobot's writer adds quantiles; normalisers read them
        assert {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"} <= set(stats)
    episodes = seen["episodes"]
    assert [e["task"] for e in episodes] == ["touch the red cube", "push the blue cube"]
    assert [e["length"] for e in episodes] == [75, 75]
    # the first row's state, in LeRobot's units, as lerobot reads it back (the helper's states: -0.01 k rad)
    calibration = default_calibration(SO101_JOINTS)
    first_state_rad = -0.01 * np.floor((15 / 30 * 1e9 + 3_000_000) / 1e7)
    expected = to_lerobot_units(np.full((1, 6), first_state_rad), calibration)[0]
    np.testing.assert_allclose(episodes[1]["first_state"], expected, atol=1e-3)
    for e in episodes:  # the first second's colours: front COLOURS[0], wrist COLOURS[1] (lossy AV1: a few levels)
        assert e["shapes"]["observation.images.front"] == [3, 32, 32]
        assert np.abs(np.array(e["colours"]["observation.images.front"]) - COLOURS[0]).max() < 12
        assert np.abs(np.array(e["colours"]["observation.images.wrist"]) - COLOURS[1]).max() < 12


@pytest.mark.parametrize("videos", [True, False], ids=["videos", "images"])
def test_a_dataset_written_by_lerobot_imports_episode_by_episode_and_trains(lerobot_python, calibration_file,
                                                                             tmp_path, videos):
    from nanovla_ros.data.lerobot_format import from_lerobot_units
    from nanovla_ros.model.feature_cache import write_instruction_table
    from nanovla_ros.training.config import TrainConfig
    from nanovla_ros.training.pipeline import cache_dir_of, run_training

    dataset = tmp_path / "recorded"
    run_lerobot(lerobot_python, str(SCRIPTS / "lerobot_write.py"), str(dataset), "--episodes", "3", "--frames",
                "40", *([] if videos else ["--images"]))
    expected = json.loads((tmp_path / "recorded.expected.json").read_text())
    summary = import_lerobot(dataset, tmp_path / "ds", str(calibration_file))
    assert summary["episodes"] == 3 and summary["format"] == "v3.0"
    demos = load_demonstrations(tmp_path / "ds", cameras=("front", "wrist"))
    # three episodes in one parquet file stay three, each with its own task, states and pictures
    assert demos.instructions == [e["task"] for e in expected]
    assert len(demos.states) == 120
    calibration = default_calibration(SO101_JOINTS)
    wrist = demos.frames_of("wrist")
    for k, e in enumerate(expected):
        first = 40 * k
        np.testing.assert_allclose(demos.states[first], from_lerobot_units(
            np.array([e["first_state"]], np.float32), calibration)[0], atol=1e-5)
        row = int(demos.frame_index[first])
        assert np.abs(demos.frames[row][10, 10].astype(int) - e["front"]).max() < 12
        assert np.abs(wrist[row][10, 10].astype(int) - e["wrist"]).max() < 12
    np.testing.assert_allclose(demos.actions[119], from_lerobot_units(
        np.array([expected[2]["last_action"]], np.float32), calibration)[0], atol=1e-5)
    texts = sorted(set(demos.instructions))
    write_instruction_table(cache_dir_of(tmp_path / "ds"), "all-MiniLM-L6-v2@test/mean-l2", texts,
                            np.random.default_rng(0).normal(size=(len(texts), 768)))
    best = run_training(tmp_path / "ds", tmp_path / "run", TrainConfig(
        tiny=True, device="cpu", steps=4, val_every=2, batch_size=8, horizon=8, warmup_steps=1, val_fraction=0.34,
        cameras=("front", "wrist")))
    assert best.is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["val_episodes"] == 1 and all(np.isfinite(v["l1"]) for v in history["val"])


def test_import_refuses_what_it_cannot_read_and_says_why(tmp_path, calibration_file):
    from nanovla_ros.data.demos import DatasetError

    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        import_lerobot(tmp_path, tmp_path / "ds", str(calibration_file))
    write_episode(tmp_path / "bags" / "ep0", calibration=calibration_file.read_text())
    export_lerobot(tmp_path / "bags", tmp_path / "lerobot", videos=False, progress=False)
    with pytest.raises(DatasetError, match="not in the dataset"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "ds", cameras={"front": "observation.images.laptop"})
    info_path = tmp_path / "lerobot" / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(DatasetError, match="v1.6"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "ds")
    info_path.write_text(json.dumps(info))
    (tmp_path / "lerobot" / "meta" / "calibration.json").unlink()
    with pytest.raises(DatasetError, match="calibration"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "ds")
    back = import_lerobot(tmp_path / "lerobot", tmp_path / "ds", str(calibration_file))  # given by hand: fine
    assert back["episodes"] == 1 and back["cameras"] == {"front": "observation.images.front"}
