"""policy_node: PLACEHOLDER until issue #4 lands the NanoVLA model.

Declares its parameters and topics (subscribes camera/image_raw, joint_states, current_task;
publishes action_chunk) but has no policy core yet, so it never publishes a chunk. It says so in
its log at start-up and once when the first task arrives.
"""
from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from nanovla_ros.msg import ActionChunk, CurrentTask
from nanovla_ros.nodes.common import (ACTION_CHUNK_TOPIC, COMMAND_QOS, CURRENT_TASK_TOPIC, IMAGE_TOPIC,
                                      JOINT_STATES_TOPIC, LATCHED_QOS, SENSOR_QOS, run_node)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.policy.config import PolicyNodeConfig

NOT_IMPLEMENTED = "no policy is configured yet (placeholder: the NanoVLA policy lands with issue #4); no action chunks will be published"


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        self.config = declare_config(self, PolicyNodeConfig)
        self._chunk_pub = self.create_publisher(ActionChunk, ACTION_CHUNK_TOPIC, COMMAND_QOS)
        self._image_sub = self.create_subscription(Image, IMAGE_TOPIC, self._on_image, SENSOR_QOS)
        self._state_sub = self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, SENSOR_QOS)
        self._task_sub = self.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, self._on_task, LATCHED_QOS)
        self._told_about_task = False
        self.get_logger().warning(NOT_IMPLEMENTED)

    def _on_image(self, msg: Image) -> None:
        pass  # consumed by the policy core once it exists

    def _on_joint_state(self, msg: JointState) -> None:
        pass

    def _on_task(self, msg: CurrentTask) -> None:
        if not self._told_about_task:
            self.get_logger().warning(f"task {msg.instruction_id} ({msg.text!r}) received, but {NOT_IMPLEMENTED}")
            self._told_about_task = True


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
