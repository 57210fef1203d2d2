"""workcell_node: the simulated SO-101 workcell (issue #5). Owns the physics; the camera node (source=sim)
reads its rendered frames and the driver node opens its emulated servo bus, so both run the code paths of
real hardware. Logs the scene's task instruction."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from nanovla_ros.msg import CurrentTask, EpisodeStatus
from nanovla_ros.nodes.common import (
    COMMAND_QOS,
    CURRENT_TASK_TOPIC,
    EPISODE_TOPIC,
    LATCHED_QOS,
    LEADER_COMMANDS_TOPIC,
    reply_patiently,
    run_node,
    stamp_from_ns,
)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.sim.config import WorkcellNodeConfig
from nanovla_ros.sim.perturbation import Perturbation
from nanovla_ros.sim.server import EpisodeState, WorkcellServer
from nanovla_ros.sim.tasks import Task
from nanovla_ros.sim.workcell import JOINTS
from nanovla_ros.srv import ResetEpisode


class WorkcellNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("workcell", **kwargs)
        self.config = declare_config(self, WorkcellNodeConfig)
        # As a leader arm would: its joint positions, published as the follower's commands.
        self._leader_pub = self.create_publisher(JointState, LEADER_COMMANDS_TOPIC, COMMAND_QOS)
        self._episode_pub = self.create_publisher(EpisodeStatus, EPISODE_TOPIC, LATCHED_QOS)
        self.server = WorkcellServer(self.config, on_leader=self._publish_leader, on_success=self._on_success,
                                     on_episode=self._publish_episode)
        reply_patiently(self, self.create_service(ResetEpisode, "~/reset", self._on_reset))
        self.server.start()
        if self.config.expert_teleop:
            # The scripted teleoperator starts on the user's instruction, as a person at the leader arm would.
            self.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, self._on_task, LATCHED_QOS)
        self.get_logger().info(
            f"workcell running at {self.config.control_rate_hz:g} Hz (real time); servo bus on "
            f"{self.config.bus_link}; {self.config.camera} camera frames in '{self.config.frames_name}'; "
            f"task: {self.server.task.instruction!r}; look: {self._look()}")

    def _look(self) -> str:
        changed = {k: v for k, v in asdict(self.server.look).items() if v != getattr(Perturbation(), k)}
        return "the training workcell" if not changed else ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={tuple(round(x, 3) for x in v)}" if isinstance(v, tuple)
            else f"{k}={v}" for k, v in changed.items())

    def _publish_leader(self, targets: np.ndarray, stamp_ns: int) -> None:
        msg = JointState(name=list(JOINTS), position=[float(v) for v in targets])
        msg.header.stamp = stamp_from_ns(stamp_ns)
        self._leader_pub.publish(msg)

    def _on_task(self, msg: CurrentTask) -> None:
        if not self.server.expert_go.is_set():
            self.get_logger().info(f"teleop: instruction {msg.text!r} received; the expert performs "
                                   f"{self.server.task.instruction!r}")
            self.server.expert_go.set()

    def _publish_episode(self, state: EpisodeState) -> None:
        msg = EpisodeStatus(episode=state.episode, seed=state.seed, instruction=state.task.instruction,
                            task_kind=state.task.kind, split=state.task.split, success=state.success,
                            expert_done=state.expert_done, steps=state.steps)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._episode_pub.publish(msg)

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        try:
            state = self.server.reset(int(request.seed), request.task, request.split)
        except (ValueError, TimeoutError) as error:
            response.success, response.message = False, str(error)
            self.get_logger().error(f"reset refused: {error}")
            return response
        t = state.task
        response.success, response.message, response.episode = True, "ready", state.episode
        response.instruction, response.task_kind, response.cube, response.target = t.instruction, t.kind, t.cube, t.target
        self.get_logger().info(f"episode {state.episode} (seed {state.seed}): {t.instruction!r}; look: {self._look()}")
        return response

    def _on_success(self, task: Task) -> None:
        self.get_logger().info(f"task success: {task.instruction!r}")

    def close(self) -> None:
        self.server.close()


def main(args: list[str] | None = None) -> int:
    return run_node(WorkcellNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
