"""Serving the viewer (no ROS imports): a Rerun recording streamed over gRPC and Rerun's web viewer served on a
local port (open http://localhost:<web_port> in a browser), or saved to an .rrd file for the Rerun app."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nanovla_ros.viewer.log import APPLICATION_ID, ViewerLog, blueprint


@dataclass
class ViewerEndpoints:
    grpc_url: str  # rerun+http://127.0.0.1:<grpc_port>/proxy
    web_url: str  # what a browser opens: the web viewer, already connected to the recording

    def __str__(self) -> str:
        return f"open {self.web_url} in a browser (or `rerun --connect {self.grpc_url}`)"


def web_url(web_port: int, grpc_url: str) -> str:
    from urllib.parse import quote

    return f"http://127.0.0.1:{web_port}/?url={quote(grpc_url, safe='')}"


def rerun_binary() -> str:
    """The Rerun executable itself (the ``rerun`` console script is a Python wrapper that runs it as a child: ending
    the wrapper would leave the server running)."""
    import rerun_cli

    binary = Path(rerun_cli.__file__).parent / "rerun"
    if not binary.is_file():
        raise RuntimeError(f"no Rerun executable at {binary}: reinstall rerun-sdk")
    return str(binary)


def spawn_server(web_port: int, grpc_port: int, timeout_s: float = 30.0):
    """Rerun's own server process (gRPC and the web viewer, bound to localhost): for a live view, whose logging
    process is busy with the robot's streams, the server and its buffers live in a process of their own."""
    import socket
    import subprocess
    import time

    executable = rerun_binary()
    process = subprocess.Popen([executable, "--serve-web", "--bind", "127.0.0.1", "--port", str(grpc_port),
                                "--web-viewer-port", str(web_port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", grpc_port)) == 0:
                return process
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the Rerun server did not start on port {grpc_port} (exit code {process.poll()})")
        time.sleep(0.1)


def start_viewer(name: str, web_port: int = 9090, grpc_port: int = 9876, save: str | Path | None = None,
                 cameras: tuple[str, ...] = ("front", "wrist"), urdf_path: str | None = None,
                 separate_server: bool = False) -> tuple[ViewerLog, ViewerEndpoints | None]:
    """A recording named ``name`` with the viewer's layout, served (web viewer + gRPC) or saved to ``save``.
    ``separate_server``: serve from Rerun's own process (``spawn_server``; kept as ``log.server``) instead of this
    one."""
    import rerun as rr

    recording = rr.RecordingStream(APPLICATION_ID, recording_id=name)
    endpoints, server = None, None
    if save:
        recording.save(str(save), default_blueprint=blueprint(cameras))
    elif separate_server:
        server = spawn_server(web_port, grpc_port)
        grpc_url = f"rerun+http://127.0.0.1:{grpc_port}/proxy"
        recording.connect_grpc(grpc_url, default_blueprint=blueprint(cameras))
        endpoints = ViewerEndpoints(grpc_url, web_url(web_port, grpc_url))
    else:
        grpc_url = recording.serve_grpc(grpc_port=grpc_port, default_blueprint=blueprint(cameras))
        rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=grpc_url)
        endpoints = ViewerEndpoints(grpc_url, web_url(web_port, grpc_url))
    log = ViewerLog(recording)
    log.server = server
    if urdf_path is None:
        from nanovla_ros.description import urdf_path as packaged_urdf

        urdf_path = str(packaged_urdf())
    log.describe_robot(urdf_path)
    return log, endpoints


def save_layout(path: str | Path, cameras: tuple[str, ...] = ("front", "wrist")) -> Path:
    """The viewer's layout as a Rerun blueprint file (open it in the Rerun app beside a recording)."""
    blueprint(cameras).save(APPLICATION_ID, str(path))
    return Path(path)
