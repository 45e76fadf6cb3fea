#!/usr/bin/env bash
# Prepare, on the CPU machine (PyPI reachable, CamVid at ../shared/data/camvid), what
# benchmarks/gpu_suite.sh needs on the lent GPU machine, which reaches no network and receives only the
# repository's working tree plus the carried folders, 64 MiB in all:
#
#   .whl/         wheels for Python 3.12 / manylinux x86-64 of what the GPU image lacks: our kornia,
#                 kornia_rs, segmentation-models-pytorch, jsonargparse (+ docstring_parser, typeshed_client),
#                 at the versions installed here; and TorchGeo 0.8.1 with what its import needs and the
#                 image lacks (geopandas, pyproj, shapely, rasterio, affine, lightly). TorchGeo is not a
#                 dependency of ours: it travels for the comparison only.
#   .camvid_gpu/  CamVid frames (48 train, 8 val, 8 test by default, every class present in train);
#                 gpu_suite.sh links them into a tree of CamVid's split sizes on arrival.
#
# Both folders are added to this checkout's .git/info/exclude (never committed; they travel through the
# device tool's `carry`). Then run the suite as benchmarks/gpu_suite.sh's header says.
#
#   bash benchmarks/gpu_prepare.sh [--train N] [--no-torchgeo]
#
# --train N: CamVid training frames to carry (fewer if the total would pass 64 MiB: the script says so).
# --no-torchgeo: leave TorchGeo out (about 35 MiB of wheels less, room for about 140 more frames).
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN=48
TORCHGEO=1
while [ $# -gt 0 ]; do
  case "$1" in
    --train) TRAIN=$2; shift ;;
    --no-torchgeo) TORCHGEO=0 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_prepare.sh: unknown option $1 (--train N, --no-torchgeo)" >&2; exit 2 ;;
  esac
  shift
done

PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
CAMVID=${LIGHTNING_SEG_CAMVID:-../shared/data/camvid}
[ -d "$CAMVID/train" ] || { echo "gpu_prepare.sh: no CamVid at $CAMVID (set LIGHTNING_SEG_CAMVID)" >&2; exit 2; }

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for path in /.whl/ /.camvid_gpu/; do
  grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
done

# our own dependencies at the versions this checkout runs with
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
core=()
for name in kornia kornia_rs segmentation_models_pytorch jsonargparse docstring_parser typeshed_client; do
  core+=("$name==$(version "$name")")
done
# torchgeo.trainers imports torchgeo.datasets, hence the geospatial stack (the image has pandas and einops);
# rasterio 1.4.3 and pyproj 3.7.1 are the smallest wheels that fit torchgeo 0.8.1 and geopandas 1.2
geo=(torchgeo==0.8.1 geopandas==1.2.0 pyproj==3.7.1 shapely==2.2.0 rasterio==1.4.3 affine==3.0.1 lightly==1.6.0)
[ "$TORCHGEO" = 1 ] || geo=()

rm -rf .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${core[@]}" "${geo[@]}"

tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
wheel_bytes=$(du -cb .whl | tail -1 | cut -f1)
room=$(( 62 * 1024 * 1024 - tree_bytes - wheel_bytes ))  # 2 MiB kept free under the 64 MiB limit
frames=$(( room / 270000 - 16 ))  # a frame + its annotation: about 0.26 MB; 8 val + 8 test frames too
if [ "$frames" -lt "$TRAIN" ]; then
  echo "gpu_prepare.sh: only room for $frames training frames (asked for $TRAIN)"
  TRAIN=$frames
fi
[ "$TRAIN" -ge 12 ] || { echo "gpu_prepare.sh: no room for CamVid frames: use --no-torchgeo" >&2; exit 1; }
"$PY" benchmarks/camvid_frames.py subset --src "$CAMVID" --dst .camvid_gpu --train "$TRAIN" --val 8 --test 8

camvid_bytes=$(du -cb .camvid_gpu | tail -1 | cut -f1)
total=$(( tree_bytes + wheel_bytes + camvid_bytes ))
awk -v t="$tree_bytes" -v w="$wheel_bytes" -v c="$camvid_bytes" -v s="$total" 'BEGIN { m = 1048576;
  printf "working tree %.1f MiB + .whl %.1f MiB + .camvid_gpu %.1f MiB = %.1f MiB (the device tool takes 64)\n",
    t / m, w / m, c / m, s / m }'
ls .whl
