#!/usr/bin/env bash
# Issue 15's GPU measurements in one command, written as one Markdown table.
#
# How to run it on a lent GPU (the device tool), from a checkout on the CPU machine:
#   1. bash benchmarks/gpu_prepare.sh
#        here, once: wheels the GPU image lacks -> .whl/, CamVid frames -> .camvid_gpu/ (both git-excluded;
#        the script prints the total, which must stay under the tool's 64 MiB)
#   2. device tool `run` with
#        command:   bash benchmarks/gpu_suite.sh
#        carry:     [".whl", ".camvid_gpu"]
#        timeout_s: 600            (the suite keeps to --budget, 560 s by default, table included)
#        kind:      nvidia-h100-x1 (the issue's targets are for an H100)
#      The table is printed last (the reply's output_tail) and written to $OUT/gpu_table.md, with
#      results.json (every record), suite.log, trace_summary.txt and trace.json.gz beside it.
#   3. Paste the table into BENCHMARKS.md, section "GPU suite (issue 15)".
#
# Here, without a GPU: bash benchmarks/gpu_suite.sh --quick
#   a dry run on the CPU (tiny sizes, few steps, about 3 minutes) through every step; its numbers are
#   real CPU numbers, labelled so, and say nothing about a GPU.
#
# What runs (each step one process, in this order, each with the time left; a step that fails or runs
# out of time gives a row saying so and the suite goes on):
#   throughput_smp     benchmarks/throughput.py --flops: fit vs bare loop + training FLOPs and MFU,
#                      SMP U-Net/ResNet34 at 512x512, batch 32, bf16-mixed, synthetic data
#   throughput_camvid  the same for configs/camvid/unet.yaml as it is (CamVid)
#   data_share         gpu_metrics.py data-share: load/transfer/augment time on the GPU timeline, and a
#                      torch.profiler trace summary (SMP config)
#   syncs              gpu_metrics.py syncs: torch.cuda.set_sync_debug_mode("warn") over a few steps
#   torchgeo           gpu_metrics.py torchgeo: ours vs TorchGeo 0.8's SemanticSegmentationTask, CamVid
#   variants           gpu_metrics.py variants: bf16-mixed, 32-true + TF32, channels_last, cudnn.benchmark,
#                      torch.compile (SMP config)
#
# Options: --quick; --budget SECONDS (560); --out DIR (default $OUT, else benchmarks/results);
#          --camvid DIR (CamVid frames to link; default .camvid_gpu, else $LIGHTNING_SEG_CAMVID, else
#          ../shared/data/camvid).
set -uo pipefail
cd "$(dirname "$0")/.."

QUICK=0
BUDGET=560
OUT_DIR=${OUT:-benchmarks/results}
CAMVID_SRC=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --budget) BUDGET=$2; shift ;;
    --out) OUT_DIR=$2; shift ;;
    --camvid) CAMVID_SRC=$2; shift ;;
    -h | --help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown option $1 (--quick, --budget SECONDS, --out DIR, --camvid DIR)" >&2; exit 2 ;;
  esac
  shift
done

START=$SECONDS
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")
RESULTS=$WORK/results
mkdir -p "$RESULTS"
LOG=$OUT_DIR/suite.log
: >"$LOG"
rm -f "$OUT_DIR"/gpu_table.md "$OUT_DIR"/results.json "$OUT_DIR"/trace_summary.txt "$OUT_DIR"/trace.json.gz
export PYTHONUNBUFFERED=1
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

say() { echo "$*" | tee -a "$LOG"; }

# --- packages: the GPU image lacks some of ours (and TorchGeo); gpu_prepare.sh put their wheels in .whl
if ! "$PY" -c "import kornia, segmentation_models_pytorch, jsonargparse, torchgeo" 2>/dev/null \
  && compgen -G ".whl/*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    say "installed the wheels of .whl into $WORK/site"
  else
    say "note: the wheels of .whl do not install on $("$PY" -V 2>&1) (they are for Python 3.12); going on without"
  fi
fi
if ! "$PY" -c "import kornia, segmentation_models_pytorch, jsonargparse" 2>>"$LOG"; then
  say "gpu_suite.sh: kornia / segmentation_models_pytorch / jsonargparse missing: run bash benchmarks/gpu_prepare.sh here and carry .whl"
  exit 2
fi

if [ "$QUICK" = 1 ]; then
  DEVICE=cpu
else
  DEVICE=cuda
  if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    say "gpu_suite.sh: no CUDA device here; on a CPU run bash benchmarks/gpu_suite.sh --quick"
    exit 2
  fi
fi

# --- CamVid: the carried frames, linked into a tree of CamVid's split sizes
if [ -z "$CAMVID_SRC" ]; then
  for candidate in .camvid_gpu "${LIGHTNING_SEG_CAMVID:-}" ../shared/data/camvid; do
    if [ -n "$candidate" ] && [ -d "$candidate/train" ]; then CAMVID_SRC=$candidate; break; fi
  done
fi
CAMVID=$WORK/camvid
SIZES=()
[ "$QUICK" = 1 ] && SIZES=(--train 24 --val 4 --test 4)
if [ -z "$CAMVID_SRC" ] || ! "$PY" benchmarks/camvid_frames.py expand --src "$CAMVID_SRC" --dst "$CAMVID" \
  "${SIZES[@]}" 2>&1 | tee -a "$LOG"; then
  CAMVID=""
  say "no CamVid frames (.camvid_gpu, \$LIGHTNING_SEG_CAMVID or ../shared/data/camvid): CamVid rows are skipped"
fi
# the class statistics of the linked tree are computed once and shared by every step
export LIGHTNING_SEG_CACHE=$WORK/cache

# --- what each step measures
SMPNET=(--model.init_args.net=lightning_seg.models.SMPNet --model.init_args.net.arch=Unet
  --model.init_args.net.encoder_name=resnet34)
if [ "$QUICK" = 1 ]; then
  SMP=(--config configs/default.yaml "${SMPNET[@]}" --trainer.precision=bf16-mixed --data.init_args.size=64
    --data.init_args.batch_size=4 --data.init_args.num_train=16 --data.init_args.num_val=4
    --data.init_args.num_workers=0)
  # torch.compile of the SMP net takes minutes on 2 CPU cores: the dry run's variants use a tiny U-Net
  VARIANT_ARGS=(--config configs/default.yaml --model.init_args.net.init_args.base_width=8
    --model.init_args.net.init_args.depth=2 --data.init_args.size=32 --data.init_args.batch_size=4
    --data.init_args.num_train=16 --data.init_args.num_val=4)
  CAMVID_ARGS=(--config configs/camvid/unet.yaml "--data.init_args.root=$CAMVID" "--data.init_args.size=[48,64]"
    --data.init_args.batch_size=2 --data.init_args.num_workers=0 --model.init_args.net.init_args.base_width=8)
  TORCHGEO_EXTRA=("--data.init_args.size=[64,64]" --data.init_args.batch_size=2 --data.init_args.num_workers=0)
  LONG=(--steps 8 --warmup 3)
  SHORT=(--steps 6 --warmup 2)
else
  SMP=(--config configs/default.yaml "${SMPNET[@]}" --trainer.precision=bf16-mixed --data.init_args.size=512
    --data.init_args.batch_size=32 --data.init_args.num_train=640 --data.init_args.num_val=32
    --data.init_args.num_workers=8)
  VARIANT_ARGS=("${SMP[@]}")
  CAMVID_ARGS=(--config configs/camvid/unet.yaml "--data.init_args.root=$CAMVID")
  # enough loader workers that both sides wait for the GPU, not for PNG decoding
  # 352×480: a multiple of 32 on both sides, so neither net pads (ours pads to its stride, TorchGeo's does not)
  TORCHGEO_EXTRA=("--data.init_args.size=[352,480]" --data.init_args.batch_size=16 --data.init_args.num_workers=12)
  LONG=(--steps 60 --warmup 15)
  SHORT=(--steps 24 --warmup 4) # past the default config's logging step (log_every_n_steps 16)
fi
# ours as TorchGeo trains: SMP U-Net/ResNet34, cross-entropy alone (the config's class weights, which
# TorchGeo's task is given too; label 11 ignored on both sides)
TORCHGEO_ARGS=(--config configs/camvid/unet.yaml "--data.init_args.root=$CAMVID" "${SMPNET[@]}"
  "--model.init_args.loss.init_args.weights={ce: 1.0}" "${TORCHGEO_EXTRA[@]}")

# write_error NAME WHY COMMAND: the record of a step that gave no result
write_error() {
  "$PY" - "$1" "$2" "$3" "$RESULTS" <<'EOF'
import datetime, json, pathlib, sys
name, why, command, folder = sys.argv[1:5]
record = {"error": why, "command": command, "date": datetime.date.today().isoformat()}
pathlib.Path(folder, f"{name}.json").write_text(json.dumps(record, indent=2))
EOF
}

# step NAME SECONDS COMMAND...: run one measurement with at most SECONDS (and never past the budget less
# the table's time); its output goes to the log; without a record, write why
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START) - 30))
  if [ "$left" -lt 20 ]; then
    write_error "$name" "skipped: the suite's time budget (${BUDGET} s) ran out" "$*"
    say "== $name: skipped (budget)"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  say "== $name (at most ${cap} s, $((SECONDS - START)) s into the suite): $*"
  local began=$SECONDS
  timeout -k 10 "$cap" "$@" --json "$RESULTS/$name.json" >"$WORK/$name.log" 2>&1
  local rc=$?
  cat "$WORK/$name.log" >>"$LOG"
  say "== $name: exit $rc after $((SECONDS - began)) s"
  if [ "$rc" -ne 0 ]; then
    local why
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      why="stopped after ${cap} s"
    else
      why="exit $rc: $(grep -v '^[[:space:]]*$' "$WORK/$name.log" | tail -1 | cut -c1-300)"
    fi
    # a partial record (variants saves after each variant) is kept; otherwise say why
    if [ -s "$RESULTS/$name.json" ] && [ "$name" = variants ]; then
      say "== $name: kept its partial record ($why)"
    else
      write_error "$name" "$why" "$*"
    fi
  fi
}

"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| device',
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')" 2>&1 | tee -a "$LOG"
[ "$QUICK" = 1 ] || nvidia-smi -L 2>&1 | tee -a "$LOG"

TP=(benchmarks/throughput.py --device "$DEVICE")
GM=(benchmarks/gpu_metrics.py)
# --real-run: the pipeline with the progress bar and a logger, as a CLI fit has them (their host reads count)
step throughput_smp 150 "$PY" "${TP[@]}" --flops --real-run "${LONG[@]}" "${SMP[@]}"
if [ -n "$CAMVID" ]; then
  step throughput_camvid 90 "$PY" "${TP[@]}" --flops --real-run "${LONG[@]}" "${CAMVID_ARGS[@]}"
else
  write_error throughput_camvid "no CamVid frames to run on" ""
fi
step data_share 90 "$PY" "${GM[@]}" data-share --device "$DEVICE" "${LONG[@]}" --trace-dir "$OUT_DIR" "${SMP[@]}"
step syncs 60 "$PY" "${GM[@]}" syncs --device "$DEVICE" "${SHORT[@]}" "${SMP[@]}"
if [ -n "$CAMVID" ]; then
  step torchgeo 100 "$PY" "${GM[@]}" torchgeo --device "$DEVICE" "${LONG[@]}" "${TORCHGEO_ARGS[@]}"
else
  write_error torchgeo "no CamVid frames to run on" ""
fi
step variants 400 "$PY" "${GM[@]}" variants --device "$DEVICE" "${LONG[@]}" "${VARIANT_ARGS[@]}"

if [ "$QUICK" = 1 ]; then
  TITLE="Quick dry run of benchmarks/gpu_suite.sh on a CPU, $(date -u +%F): CPU numbers, tiny sizes; not GPU results"
else
  TITLE="GPU suite (issue 15): $("$PY" -c 'import torch; print(torch.cuda.get_device_name())'), $(date -u +%F), torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi
"$PY" "${GM[@]}" table --results "$RESULTS" --out "$OUT_DIR/gpu_table.md" --merged "$OUT_DIR/results.json" \
  --title "$TITLE" 2>>"$LOG"
say "suite: $((SECONDS - START)) s; files in $OUT_DIR: gpu_table.md results.json suite.log trace_summary.txt trace.json.gz"
