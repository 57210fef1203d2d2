"""workcell_node: the simulated SO-101 workcell (issue #5). Owns the physics; the camera node (source=sim)
reads its rendered frames and the driver node opens its emulated servo bus, so both run the code paths of
real hardware. Logs the scene's task instruction."""
from __future__ import annotations

from rclpy.node import Node

from nanovla_ros.nodes.common import run_node
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.sim.config import WorkcellNodeConfig
from nanovla_ros.sim.server import WorkcellServer


class WorkcellNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("workcell", **kwargs)
        self.config = declare_config(self, WorkcellNodeConfig)
        self.server = WorkcellServer(self.config)
        self.server.start()
        self.get_logger().info(
            f"workcell running at {self.config.control_rate_hz:g} Hz (real time); servo bus on "
            f"{self.config.bus_link}; {self.config.camera} camera frames in '{self.config.frames_name}'; "
            f"task: {self.server.task.instruction!r}")

    def close(self) -> None:
        self.server.close()


def main(args: list[str] | None = None) -> int:
    return run_node(WorkcellNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
