"""nanovla_ros: NanoVLA on a LeRobot SO-101 arm as a ROS 2 node suite.

Rings (see README): ``camera``, ``language``, ``routing`` and ``graph`` are pure Python and never
import rclpy or message modules; only ``nanovla_ros.nodes``, ``nanovla_ros.launcher`` and
``nanovla_ros.cli`` talk ROS.

On a ROS host (colcon build) the interfaces generated from msg/ and srv/ are installed in the same
package directory as this file. On a pip-only host they are built into a separate prefix by
scripts/setup_env.sh; ``extend_path`` lets ``nanovla_ros.msg`` and ``nanovla_ros.srv`` resolve there
while the Python code is used from the source tree.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
