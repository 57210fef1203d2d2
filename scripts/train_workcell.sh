#!/usr/bin/env bash
# The documented recipe behind the shipped checkpoint (nanovla_ros/checkpoints/nanovla_s_workcell.safetensors):
# demonstrations through the whole graph -> dataset -> frozen features -> NanoVLA-S/L -> fp16 export -> evaluation.
# Training wants a GPU (a tiny CPU run: add --tiny --device cpu --steps 100); the rest runs on a laptop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# SOURCE=graph (default): record through the ROS graph, as with a real arm. SOURCE=sim: the in-process fast path used
# for runs 3-5 in the README (1000 episodes per task, DART noise, 83 s per 1000 episodes on 15 cores).
SOURCE=${SOURCE:-graph}
IMAGE_SIZE=${IMAGE_SIZE:-320}  # encoder input: 10x10 feature map (224 gives 7x7; see the README's diagnosis)
# CAMERAS="front wrist" adds the wrist view (recorded beside the front camera, read by the model).
CAMERAS=${CAMERAS:-front}
if [ "$SOURCE" = sim ]; then
  $PY -m nanovla_ros.cli collect --in-process --task pick_place stack push touch --episodes 1000 --first-seed 10000 \
      --sample-every 8 --noise-rad 0.05 --cameras $CAMERAS --workers "$(nproc)" --out data/demos
else
  # 1. 50 expert-teleoperated episodes per task through the ROS graph, one rosbag2 MCAP bag each (~10 s/episode).
  $PY -m nanovla_ros.cli collect --task pick_place stack push touch --episodes 50 --out data/bags --cameras $CAMERAS
  # 2. bags -> samples (every 4th 30 Hz command is a sample; all commands stay targets), instruction tables.
  $PY -m nanovla_ros.cli dataset --bags data/bags --out data/demos --sample-every 4 --jpeg-quality 80
fi
$PY -c "from nanovla_ros.training.pipeline import write_instruction_tables, cache_dir_of
from nanovla_ros.sim.tasks import all_instructions
write_instruction_tables(cache_dir_of('data/demos'), all_instructions())"
# 3. train (image features are cached on the first run), several GPUs: torchrun --nproc-per-node N -m nanovla_ros.cli train ...
$PY -m nanovla_ros.cli train --data data/demos --variant s --out out/train_s --device cuda --image-size "$IMAGE_SIZE" --cameras $CAMERAS
$PY -m nanovla_ros.cli train --data data/demos --variant l --out out/train_l --device cuda --image-size "$IMAGE_SIZE" --cameras $CAMERAS
# 4. ship the small one in fp16
$PY -m nanovla_ros.cli export out/train_s/best.safetensors nanovla_ros/checkpoints/nanovla_s_workcell.safetensors
# 5. closed-loop success, 50 episodes per task and split (seeds 1000..), and a few through the deployed graph
$PY -m nanovla_ros.cli evaluate nanovla_ros/checkpoints/nanovla_s_workcell.safetensors --workers 2 --out out/eval/s.json
$PY -m nanovla_ros.cli evaluate nanovla_ros/checkpoints/nanovla_s_workcell.safetensors --graph --task pick_place \
    --split train --episodes 5 --out out/eval/s_graph.json
