"""The package's layers (STYLE.md rules 1 and 9; docs/architecture.md): imports run down the rings, never up or
sideways, and the core never loads ROS. The module list is found by walking the package, so a new module is
checked the day it lands."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nanovla_ros"

# Component (a subpackage, or a top-level module) -> the components it may import. Components not listed as a
# key of CORE are the application ring (nodes, launcher, CLI, client, demo, collection, graph evaluation), which
# may import anything.
CORE = {
    "configuration": set(),
    "tasks": set(),  # what the workcell's tasks mean: kinds, objects, phrasings, splits
    "transport": set(),  # the shared-memory frame block between the workcell and the camera
    "graph": set(),  # the node list and launch arguments, read by both launchers
    "phrasings": {"tasks"},  # ways of saying each task, by family; out-of-scope requests
    "language": {"configuration", "tasks", "phrasings"},
    "driver": {"configuration"},
    "recording": {"configuration"},
    "camera": {"configuration", "transport"},
    "model": {"configuration", "tasks", "language"},
    "policy": {"configuration", "language", "model"},
    "routing": {"configuration", "language", "model"},
    "sim": {"configuration", "tasks", "transport", "driver", "language"},
    "data": {"configuration", "tasks", "recording", "driver", "camera", "model"},
    "training": {"configuration", "tasks", "phrasings", "data", "model", "language"},
    "evaluation": {"configuration", "tasks", "phrasings", "sim", "driver", "model", "policy", "language"},
    "description": {"driver"},  # the SO-101's URDF and its kinematics
    "viewer": {"configuration", "driver", "description", "data", "recording", "camera"},  # Rerun, no ROS
}
ROS_PREFIXES = ("rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "builtin_interfaces",
                "rcl_interfaces", "nanovla_ros.msg", "nanovla_ros.srv")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every absolute module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from nanovla_ros import launcher`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _core_modules() -> list[str]:
    return [m for m in _modules() if _component(m) in CORE]


def test_the_walk_finds_the_package_s_modules():
    modules = _modules()
    assert "nanovla_ros.driver.bus" in modules and "nanovla_ros.nodes.router_node" in modules
    assert len(_core_modules()) > 60, len(_core_modules())


def test_imports_run_down_the_rings():
    known = {_component(m) for m in _modules()} | {"msg", "srv"}
    wrong = []
    for module, path in _modules().items():
        component = _component(module)
        if component not in CORE:
            continue
        for target in _imports(path):
            if not target.startswith("nanovla_ros."):
                if target.split(".")[0] in ("rclpy",) or target.startswith(ROS_PREFIXES):
                    wrong.append(f"{module} imports {target} (ROS, in the core)")
                continue
            other = _component(target)
            if other in known and other != component and other not in CORE[component]:
                wrong.append(f"{module} imports {target} ({component} may import {sorted(CORE[component])})")
    assert not wrong, "\n".join(wrong)


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_core_modules_do_not_load_rclpy_or_messages():
    loaded = _loaded_after_import(_core_modules())
    ros = sorted(m for m in loaded if m.startswith(ROS_PREFIXES))
    assert ros == [], f"core modules pulled in ROS modules: {ros}"


def test_node_modules_do_load_rclpy():
    # The check above can fail: importing a node module loads rclpy.
    assert "rclpy" in _loaded_after_import(["nanovla_ros.nodes.router_node"])
