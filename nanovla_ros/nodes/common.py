"""What every node shares: QoS profiles chosen by intent, topic names, and the process main."""
from __future__ import annotations

import faulthandler
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable

import rclpy
from builtin_interfaces.msg import Time
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from nanovla_ros.camera.sources import CameraOpenError
from nanovla_ros.configuration import ConfigError

# --- QoS by intent
SENSOR_QOS = qos_profile_sensor_data  # camera frames: best effort, keep last 5; a late frame is useless
LATCHED_QOS = QoSProfile(  # "current state" topics: late joiners get the last value
    depth=1, history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
COMMAND_QOS = QoSProfile(  # commands and events: every message matters, only the newest few do
    depth=10, history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Request / reply services that many callers may hit at once (set_instruction, encode_instruction): the
# default service QoS keeps 10 requests, and DDS silently drops older ones when a burst exceeds that before the
# server takes them; callers then wait for a reply that never comes. The router answers "busy" past its own
# bound instead, which needs the requests to reach it.
BURST_SERVICE_QOS = QoSProfile(
    depth=256, history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

# --- relative names, so namespaces and remapping work
IMAGE_TOPIC = "camera/image_raw"
CAMERA_INFO_TOPIC = "camera/camera_info"
CURRENT_TASK_TOPIC = "current_task"
ROUTE_DECISION_TOPIC = "route_decision"
ACTION_CHUNK_TOPIC = "action_chunk"
ROBOT_DESCRIPTION_TOPIC = "robot_description"  # std_msgs/String, latched: the SO-101 URDF
JOINT_TRAJECTORY_TOPIC = "joint_trajectory"  # trajectory_msgs/JointTrajectory to the driver (MoveIt, scripts)
JOINT_STATES_TOPIC = "joint_states"
JOINT_COMMANDS_TOPIC = "joint_commands"
LEADER_COMMANDS_TOPIC = "leader/joint_commands"  # a leader arm's joints, for a follower to copy
DIAGNOSTICS_TOPIC = "diagnostics"
EPISODE_TOPIC = "workcell/episode"  # the simulated workcell's episode status (latched)
SET_INSTRUCTION_SERVICE = "set_instruction"
ENCODE_INSTRUCTION_SERVICE = "encode_instruction"


def stamp_from_ns(time_ns: int) -> Time:
    return Time(sec=time_ns // 1_000_000_000, nanosec=time_ns % 1_000_000_000)


def ns_from_stamp(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _events_executor():
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:  # rclpy before Jazzy
        return None
    return EventsExecutor()


# How long a node may take to go down once asked. Closing may wait on work in progress (the instruction encoder
# finishes loading Gemma-3-270M: up to 30 s); destroying the node, ending rclpy and leaving the interpreter then get
# EXIT_DEADLINE_S more. Past either, every thread's traceback goes to stderr and the process ends with code 1:
# a teardown stuck inside DDS (a futex wait in C, where no Python signal handler ever runs again) would otherwise
# leave the process alive, orphaned, after its launcher is gone.
CLOSE_DEADLINE_S = 35.0
EXIT_DEADLINE_S = 10.0
REPLY_GIVE_UP_S = 5.0  # how long a service keeps resending a reply its caller's DDS reader has not yet matched


_REPLY_LOCK = threading.Lock()  # warnings.catch_warnings changes process-wide state


def _send_reply(send: Callable, response, header) -> bool:
    """``send(response, header)``; False when DDS timed out waiting to discover the caller's reply reader."""
    with _REPLY_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        send(response, header)
    missed = [w for w in caught if "failed to send response (timeout)" in str(w.message)]
    for w in caught:
        if w not in missed:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return not missed


def reply_patiently(node: Node, service, give_up_s: float = REPLY_GIVE_UP_S, retry_s: float = 0.2):
    """Make ``service`` (made by ``node``) resend a reply that DDS could not deliver yet, instead of dropping it.

    A service can only answer a client whose reply reader it has discovered. A client made just before its call
    (every ``nanovla instruct``, ``ros2 service call``) may not be discovered yet on a loaded host: rmw_fastrtps
    waits 100 ms, then rclpy warns "failed to send response (timeout)" and the reply is gone, while the request
    was carried out (for set_instruction: the arm starts the task, the caller is told nothing). Here such replies
    wait in a queue that one timer (its own mutually exclusive group: one attempt at a time, whatever the
    executor; stopped while the queue is empty) sends again every ``retry_s`` until each goes through or
    ``give_up_s`` passes (then logged once). Returns ``service``.
    """
    send = service.send_response
    pending: list[tuple[float, object, object]] = []  # (deadline, response, header), oldest first
    lock = threading.Lock()

    def retry() -> None:
        with lock:
            waiting = list(pending)
        kept = []
        for deadline, response, header in waiting:
            if _send_reply(send, response, header):
                continue
            if time.monotonic() > deadline:
                node.get_logger().error(f"a reply of {service.srv_name} was lost: its caller was not discovered "
                                        f"within {give_up_s:g} s (the request itself was carried out)")
                continue
            kept.append((deadline, response, header))
        with lock:
            pending[:len(waiting)] = kept  # replies queued meanwhile stay behind these
            if not pending:
                timer.cancel()

    timer = node.create_timer(retry_s, retry, callback_group=MutuallyExclusiveCallbackGroup())
    timer.cancel()

    def send_response(response, header) -> None:
        if _send_reply(send, response, header):
            return
        with lock:
            pending.append((time.monotonic() + give_up_s, response, header))
            timer.reset()

    service.send_response = send_response
    return service


def run_node(node_factory: Callable[[], Node], args: list[str] | None = None, threads: int = 1,
             events: bool = False, close_deadline_s: float = CLOSE_DEADLINE_S,
             exit_deadline_s: float = EXIT_DEADLINE_S) -> int:
    """Process main shared by all nodes: init, spin, clean shutdown on Ctrl-C or SIGTERM.

    ``threads`` > 1 uses a MultiThreadedExecutor: only for nodes whose callbacks block (the router
    waits on the encoder) and whose groups are reentrant. rclpy's MultiThreadedExecutor busy-waits
    while ready work belongs to a mutually exclusive group that is running, which a 100 Hz
    subscription makes constant (seen: a subscriber of joint_states at 80 % CPU). ``events`` uses rclpy's
    EventsExecutor where it exists (Jazzy and later; single-threaded, its wait loop in C++): for a node whose
    callbacks only store messages that arrive at a high rate (the policy: 6 % of a core for ~160 messages a
    second, against 17 % on the single-threaded executor).

    Returns the exit code: 0 on a clean stop, 1 when the node could not start (bad parameters,
    missing device); the reason is logged once, never retried in a loop. Going down is bounded: a second SIGTERM
    ends the process at once, and a teardown past ``close_deadline_s`` (closing) or ``exit_deadline_s`` (the rest)
    dumps every thread's traceback and exits with code 1 (``faulthandler``'s watchdog: a C thread, so it fires even
    when the main thread is stuck in C).
    """
    # rclpy's own SIGINT handler would invalidate the context at once, while the node's threads
    # (frame pump, control loop) may still publish or hold the arm. Instead Ctrl-C and SIGTERM raise
    # KeyboardInterrupt in the main thread while the node starts, end the spin loop once it runs, and the
    # node is closed before the context goes away. SIGHUP (the launcher died: see launcher.PARENT_DEATH_SIGNAL)
    # ends it the same way but calls ``node.abandon()`` where the node has one: a lost supervisor is not a stop.
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    hangup = threading.Event()
    node = None
    code = 0
    try:
        node = node_factory()
        executor = _events_executor() if events else None
        if executor is None:
            executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        # Spinning, Ctrl-C and SIGTERM only ask the loop to end: a KeyboardInterrupt raised inside rclpy's
        # conversion of a message it was taking came out as "RuntimeError: Unable to convert call argument '0'
        # to Python object", exit code 1 (2 policy shutdowns of ~60 through the graph).
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: (hangup.set(), stopping.set()))
        while rclpy.ok() and not stopping.is_set():
            executor.spin_once(timeout_sec=0.1)  # returns to Python often enough to see the request
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, CameraOpenError):
        code = 1  # already logged once, as FATAL, by the node that raised it
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # asked again while going down: end now
        faulthandler.dump_traceback_later(close_deadline_s, exit=True)
        if node is not None:
            close = getattr(node, "abandon", None) if hangup.is_set() else None
            close = close or getattr(node, "close", None)
            if close is not None:
                close()
        # re-armed, not cancelled: it also bounds the interpreter's exit (DDS entities destroyed at finalisation)
        faulthandler.dump_traceback_later(exit_deadline_s, exit=True)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
