"""Viewer configuration (`nanovla view`, the viewer node)."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require


@dataclass(frozen=True)
class ViewerConfig:
    web_port: int = param(9090, "Port of the web viewer (open http://localhost:<web_port>); 0 = any free port.")
    grpc_port: int = param(9876, "Port the recording is streamed on (rerun+http://localhost:<grpc_port>/proxy).")
    max_image_rate_hz: float = param(10.0, "Camera frames logged per second and camera at most (the viewer's CPU "
                                           "cost on a small host); 0 = every frame.")
    save: str = param("", "Write the recording to this .rrd file instead of serving it (open it with `rerun FILE`).")

    def __post_init__(self) -> None:
        require(0 <= self.web_port <= 65535, f"web_port={self.web_port} must be a port number")
        require(0 <= self.grpc_port <= 65535, f"grpc_port={self.grpc_port} must be a port number")
        require(self.max_image_rate_hz >= 0.0, f"max_image_rate_hz={self.max_image_rate_hz} must be >= 0")
