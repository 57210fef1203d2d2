#!/usr/bin/env python3
"""The docs' picture of the live graph in the viewer: launches the suite on the simulated workcell with the
shipped policy, runs `nanovla view` (the viewer node) beside it, sends the scene's instruction, and once the workcell
reports success stops the graph (the viewer node keeps serving what it received), opens the live viewer in headless
Chromium and saves what it shows. The browser waits for the graph to stop because Chromium renders 3D in software
and cannot share two cores with the simulation and the policy.

    .venv/bin/python scripts/viewer/screenshot_live.py [--out docs/images/viewer_live_graph.jpg] [--task touch]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    import cv2
    import numpy as np

    from nanovla_ros.client import NanovlaClient
    from nanovla_ros.demo import scene_instruction
    from nanovla_ros.launcher import Launcher
    from nanovla_ros.viewer.browser import BrowserError, screenshot_when

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images/viewer_live_graph.jpg")
    parser.add_argument("--task", default="touch")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--web-port", type=int, default=9190)
    parser.add_argument("--grpc-port", type=int, default=9976)
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log_path = Path("out") / "viewer_screenshot_launch.log"  # the graph's output, for when something fails
    log_path.parent.mkdir(exist_ok=True)
    log = open(log_path, "w")
    launcher = Launcher({"workcell": "true", "task": args.task, "seed": str(args.seed), "checkpoint": "shipped"},
                        out=log)
    viewer = None
    try:
        launcher.start(timeout_s=180.0)
        viewer = subprocess.Popen([sys.executable, "-m", "nanovla_ros.cli", "view", "--web-port", str(args.web_port),
                                   "--grpc-port", str(args.grpc_port)], stdout=log, stderr=subprocess.STDOUT)
        with NanovlaClient(node_name="viewer_screenshot") as client:
            if unready := client.wait_until_ready(120.0):
                print(f"not ready: {unready}")
                return 1
            sent = time.monotonic()
            accepted = client.set_instruction(scene_instruction(args.task, args.seed), "auto", timeout_s=60.0)
            print(f"instruction accepted: {accepted.accepted}")
        url = (f"http://127.0.0.1:{args.web_port}/?url=rerun%2Bhttp%3A%2F%2F127.0.0.1%3A{args.grpc_port}"
               "%2Fproxy")

        stopped, previous, steady = [], [], []

        def episode_over() -> bool:
            log.flush()
            over = "task success:" in log_path.read_text() or time.monotonic() - sent > 40.0
            if over and not stopped:
                stopped.append(launcher.stop())
            return over

        def ready(image: np.ndarray) -> bool:
            """The viewer up (not a white browser error page), the 3D view
            drawn (not blank)."""
            if viewer.poll() is not None:
                raise SystemExit(f"nanovla view exited with {viewer.returncode} (see the launch log)")
            colourful = (image.max(-1).astype(int) - image.min(-1) > 60).mean()  # an error page is grey: ~0.3 %
            body = image[40:].astype(int)  # below the top bar, whose latency counter changes every second
            same = bool(previous) and float(np.abs(body - previous[-1]).mean()) < 0.5
            previous[:] = [body]
            steady.append(same)  # the viewer has caught up when five screenshots in a row agree
            return colourful > 0.05 and image[100:600, 420:980].std() > 20 and all(steady[-5:]) and len(steady) >= 5
        try:
            image = screenshot_when(url, ready, timeout_s=240.0, open_after=episode_over)
        except BrowserError as error:
            if getattr(error, "last", None) is not None:
                cv2.imwrite(str(Path("out") / "viewer_screenshot_failed.png"), error.last[..., ::-1])
            raise
        cv2.imwrite(args.out, image[..., ::-1])
        print(f"saved {args.out}")
        return 0
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.wait(timeout=30)
        launcher.stop()
        log.close()


if __name__ == "__main__":
    raise SystemExit(main())
