#!/usr/bin/env bash
# The documented recipe behind the shipped checkpoint (nanovla_ros/checkpoints/nanovla_s_workcell.safetensors):
# demonstrations through the whole graph -> dataset -> frozen features -> NanoVLA-S/L -> fp16 export -> evaluation.
# Training wants a GPU (a tiny CPU run: add --tiny --device cpu --steps 100); the rest runs on a laptop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# The shipped checkpoint started from this recipe (SOURCE=sim: ~3500 successful expert episodes, front and wrist
# cameras at 320 px, the auxiliary task head with colour queries, 6000 steps at batch 256, ~9 min on one H100) and
# went on through fine-tunes and DAgger rounds (step 5 below), each with fresh expert episodes; its lineage is in
# its metadata and docs/experiments tells the story. scripts/device/sim_run.sh is the same recipe on a lent GPU
# machine, in phases.
# SOURCE=sim: the in-process fast path (1000 episodes per task, DART noise; ~5 min on 15 cores). SOURCE=graph: record
# through the ROS graph, as with a real arm; its bags carry no object positions, so the task head is off there.
SOURCE=${SOURCE:-sim}
IMAGE_SIZE=${IMAGE_SIZE:-320}  # encoder input: 10x10 feature map (224 gives 7x7: coarser cube positions)
CAMERAS=${CAMERAS:-front wrist}  # the wrist view is recorded beside the front camera and read by the model
TASK_HEAD=--task-loss-weight=1  # the named cube's (and goal's) x, y as an auxiliary target: binds the colour word
if [ "$SOURCE" = sim ]; then
  $PY -m nanovla_ros.cli collect --in-process --task pick_place stack push touch --episodes 1000 --first-seed 10000 \
      --sample-every 10 --noise-rad 0.05 --cameras $CAMERAS --workers "$(nproc)" --out data/demos
else
  TASK_HEAD=""
  # 1. 50 expert-teleoperated episodes per task through the ROS graph, one rosbag2 MCAP bag each (~10 s/episode).
  $PY -m nanovla_ros.cli collect --task pick_place stack push touch --episodes 50 --out data/bags --cameras $CAMERAS
  # 2. bags -> samples (every 4th 30 Hz command is a sample; all commands stay targets), instruction tables.
  $PY -m nanovla_ros.cli dataset --bags data/bags --out data/demos --sample-every 4 --jpeg-quality 80
fi
$PY -c "from nanovla_ros.training.pipeline import write_instruction_tables, cache_dir_of
from nanovla_ros.sim.tasks import all_instructions
write_instruction_tables(cache_dir_of('data/demos'), all_instructions())"
# 3. train (image features are cached on the first run); several GPUs: torchrun --nproc-per-node N -m nanovla_ros.cli
#    train ...
for variant in s l; do
  $PY -m nanovla_ros.cli train --data data/demos --variant $variant --out out/train_$variant --device cuda \
      --image-size "$IMAGE_SIZE" --cameras $CAMERAS $TASK_HEAD --steps 6000 --batch-size 256
done
# 4. ship the small one in fp16
SHIPPED=nanovla_ros/checkpoints/nanovla_s_workcell.safetensors
$PY -m nanovla_ros.cli export out/train_s/best.safetensors "$SHIPPED"
# 5. DAgger rounds: the last checkpoint drives pick-and-place, stacking and pushing, the expert
#    labels where it went (30-step labels at every 10th step), and the model is fine-tuned on everything so far.
CKPT=$SHIPPED
TABLES=$($PY -c "from nanovla_ros.training.pipeline import cache_dir_of; print(cache_dir_of('data/demos'))")
for r in $(seq 1 "${DAGGER_ROUNDS:-0}"); do
  $PY -m nanovla_ros.cli collect --dagger "$CKPT" --task pick_place stack push --episodes 150 \
      --first-seed $((20000 + 1000 * r)) --sample-every 10 --label-steps 30 --device cuda \
      --table-dir "$TABLES" --workers "$(nproc)" --out data/demos
  $PY -m nanovla_ros.cli train --data data/demos --variant s --cameras $CAMERAS --image-size "$IMAGE_SIZE" \
      --init-from "$CKPT" --out out/dagger$r --steps 2000 --lr 5e-5 --warmup-steps 100 --batch-size 256 --device cuda
  CKPT=out/dagger$r.safetensors
  $PY -m nanovla_ros.cli export out/dagger$r/best.safetensors "$CKPT"
done
[ "$CKPT" = "$SHIPPED" ] || cp "$CKPT" "$SHIPPED"
# 6. closed-loop success, 50 episodes per task and split (seeds 1000..), and a few through the deployed graph
$PY -m nanovla_ros.cli evaluate nanovla_ros/checkpoints/nanovla_s_workcell.safetensors --workers 2 --out out/eval/s.json
$PY -m nanovla_ros.cli evaluate nanovla_ros/checkpoints/nanovla_s_workcell.safetensors --graph --task touch \
    --split train --episodes 5 --out out/eval/s_graph.json
