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


def start_viewer(name: str, web_port: int = 9090, grpc_port: int = 9876, save: str | Path | None = None,
                 cameras: tuple[str, ...] = ("front", "wrist"), urdf_path: str | None = None
                 ) -> tuple[ViewerLog, ViewerEndpoints | None]:
    """A recording named ``name`` with the viewer's layout, served (web viewer + gRPC) or saved to ``save``."""
    import rerun as rr

    recording = rr.RecordingStream(APPLICATION_ID, recording_id=name)
    endpoints = None
    if save:
        recording.save(str(save), default_blueprint=blueprint(cameras))
    else:
        grpc_url = recording.serve_grpc(grpc_port=grpc_port, default_blueprint=blueprint(cameras))
        rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=grpc_url)
        endpoints = ViewerEndpoints(grpc_url, web_url(web_port, grpc_url))
    log = ViewerLog(recording)
    if urdf_path is None:
        from nanovla_ros.description import urdf_path as packaged_urdf

        urdf_path = str(packaged_urdf())
    log.describe_robot(urdf_path)
    return log, endpoints


def save_layout(path: str | Path, cameras: tuple[str, ...] = ("front", "wrist")) -> Path:
    """The viewer's layout as a Rerun blueprint file (open it in the Rerun app beside a recording)."""
    blueprint(cameras).save(APPLICATION_ID, str(path))
    return Path(path)
