"""The ROS-host path: `colcon build` of the ament_cmake package (against the ROS 2 wheels here), then
the installed executables and launch file are where `ros2 run` / `ros2 launch` look for them."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = ["CMakeLists.txt", "package.xml", "setup.py", "cmake", "msg", "srv", "launch", "config", "nanovla_ros"]


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    if shutil.which("colcon", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("colcon is not installed in this venv: run `make setup` (requirements/test.txt)")
    workspace = tmp_path_factory.mktemp("ws")
    package = workspace / "src" / "nanovla_ros"
    package.mkdir(parents=True)
    for name in PACKAGE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, package / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, package / name)
    prefix = sys.prefix
    env = {**os.environ, "AMENT_PREFIX_PATH": prefix, "CMAKE_PREFIX_PATH": prefix}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "colcon"), "build", "--event-handlers", "console_cohesion-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workspace / "install" / "nanovla_ros"


def test_colcon_installs_executables_launch_file_and_config(colcon_install):
    for name in ("camera_node", "instruction_encoder_node", "router_node", "policy_node", "so101_driver_node", "nanovla"):
        executable = colcon_install / "lib" / "nanovla_ros" / name
        assert executable.is_file() and os.access(executable, os.X_OK), name
    assert (colcon_install / "share" / "nanovla_ros" / "launch" / "so101.launch.py").is_file()
    assert (colcon_install / "share" / "nanovla_ros" / "config" / "so101.yaml").is_file()


def test_installed_package_holds_code_and_interfaces_together(colcon_install):
    site = next(colcon_install.glob("lib/python3*/site-packages"))
    code = ("import nanovla_ros, nanovla_ros.graph as g; from nanovla_ros.msg import ActionChunk; "
            "from nanovla_ros.srv import SetInstruction; from nanovla_ros.nodes import router_node; "
            "print(nanovla_ros.__file__); print(g.default_params_file())")
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": f"{colcon_install}:{sys.prefix}",
           "LD_LIBRARY_PATH": f"{colcon_install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    module_file, params_file = result.stdout.split()
    assert module_file.startswith(str(site))  # the installed copy, not the source tree
    assert params_file == str(colcon_install / "share" / "nanovla_ros" / "config" / "so101.yaml")
