#!/usr/bin/env bash
# The GPU check of issue 17 in one script: set up, render the GPU model repository, run the models bench, ingest
# and look queries at 1/8/32 clients with SegFormer-b2 in fp16, and write every table under one output folder.
#
#   bash bench/device.sh [--out DIR] [--dry-run] [--cpu] [--no-setup] [--clients 1,8,32] [--n 120] [--q-n 64]
#
#   (default)  on a CUDA machine: KIND_GPU instances. The embedded tritonserver (nvidia-pytriton) has the python
#              backend only, so the models run torch fp16 there; if a full Triton with the onnxruntime backend is on
#              PATH (the NGC image), the native onnxruntime + TensorRT FP16 repository is rendered and its models
#              bench runs too.
#   --dry-run  no server: set up, write the weights + ONNX, render both GPU repositories into OUT, validate every
#              config.pbtxt against Triton's model_config.proto, print the plan. Runs anywhere (seconds).
#   --cpu      the whole run on the CPU with the tiny SegFormer and small sizes: how this script is tested
#              without a GPU (minutes).
#   --no-setup skip scripts/setup.sh (a machine without package registries: .venv and LOOKSTREAM_MODEL_ENV or
#              .venv-models must exist already).
#
# Budget: < 8 minutes on a GPU machine (weights + export ~1.5 min, models bench ~1.5 min, ingest ~1 min, query
# ~2 min). Output: OUT/{plan.txt, env.txt, repo-python-gpu/, repo-onnxruntime-gpu/, models.txt, models.json,
# ingest.txt, query.txt, bench-*.json, RESULTS-device.md, timings.txt}.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT="$ROOT/bench/out/device-$(date -u +%Y%m%dT%H%M%SZ)"
MODE=gpu
CLIENTS=1,8,32
N=120
QN=64
SETUP=1
while (($#)); do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --dry-run) MODE=dry; shift ;;
    --cpu) MODE=cpu; shift ;;
    --no-setup) SETUP=0; shift ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --q-n) QN=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
step() { printf '[device %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" | tee -a "$OUT/timings.txt" >&2; }
export PYTHONUNBUFFERED=1

if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: not a CUDA machine (use --cpu or --dry-run)" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" >&2
  DEVICE=gpu; VARIANT=--full; SIZE_ARGS=(--clients "$CLIENTS" --q-n "$QN" --n "$N")
else
  DEVICE=cpu; VARIANT=--tiny; N=$((N < 24 ? N : 24)); QN=$((QN < 16 ? QN : 16))
  [ "$MODE" = cpu ] && CLIENTS=1,8
  SIZE_ARGS=(--clients "$CLIENTS" --q-n "$QN" --n "$N")
fi
{
  echo "mode=$MODE device=$DEVICE variant=$VARIANT clients=$CLIENTS n=$N q_n=$QN out=$OUT"
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed files"
} | tee "$OUT/plan.txt" >&2

if [ "$SETUP" = 1 ]; then
  step "setup (scripts/setup.sh: worker venv + model env)"
  bash scripts/setup.sh >"$OUT/setup.log" 2>&1 || { tail -20 "$OUT/setup.log" >&2; exit 1; }
fi
PY=.venv/bin/python
MPY=${LOOKSTREAM_MODEL_ENV:-.venv-models}/bin/python
[ -x "$PY" ] && [ -x "$MPY" ] || { echo "no $PY or $MPY: run without --no-setup" >&2; exit 1; }
"$MPY" -c 'import torch, onnxruntime; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "onnxruntime", onnxruntime.__version__)' \
  | tee "$OUT/env.txt" >&2

step "weights: declared random $([ "$VARIANT" = --full ] && echo SegFormer-b2 || echo tiny SegFormer) + ResNet50, ONNX export with parity"
WSRC="$ROOT/bench/out/weights/device-${VARIANT#--}"
"$PY" - "$WSRC" "$VARIANT" <<'EOF' >"$OUT/weights.json"
import json, shutil, sys
from pathlib import Path
from workers import model_repo
src, variant = Path(sys.argv[1]), sys.argv[2]
prov = model_repo.weights_provenance(src) if src.exists() else {}
if not prov or any(p.get("missing") for p in prov.values()) or not model_repo.has_onnx(src):
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(model_repo.MODELS_SRC, src, ignore=shutil.ignore_patterns("weights", "weights.*", "__pycache__"))
    model_repo.init_weights(src, random=True, tiny=variant == "--tiny")
print(json.dumps(model_repo.weights_provenance(src), indent=2))
EOF

step "render the GPU model repositories into $OUT and validate them (model_config.proto)"
"$PY" - "$WSRC" "$OUT" <<'EOF' | tee "$OUT/repositories.txt" >&2
import sys
from pathlib import Path
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from workers import model_repo
src, out = Path(sys.argv[1]), Path(sys.argv[2])
env = model_repo.default_env_path()
for backend in ("python", "onnxruntime"):
    dst = model_repo.render_repository(src, out / f"repo-{backend}-gpu", env_path=env, device="gpu", backend=backend)
    for cfg in sorted(dst.glob("*/config.pbtxt")):
        m = text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
        acc = [a.name for a in m.optimization.execution_accelerators.gpu_execution_accelerator]
        print(f"{dst.name}/{cfg.parent.name}: backend {m.backend}, {m.instance_group[0].count} x KIND_GPU, "
              f"max batch {m.max_batch_size}, preferred {list(m.dynamic_batching.preferred_batch_size)}, "
              f"queue delay {m.dynamic_batching.max_queue_delay_microseconds} us, accelerators {acc or '-'}")
EOF

if [ "$MODE" = dry ]; then
  step "dry run: would now run bench/models.py $VARIANT --device $DEVICE, python -m bench ingest + query (${CLIENTS} clients)"
  exit 0
fi

step "models bench through Triton ($DEVICE, python backend$([ "$DEVICE" = gpu ] && echo ', torch fp16' || echo ', torch vs ONNX'))"
if [ "$DEVICE" = gpu ]; then
  MARGS=(--full --device gpu --no-inprocess --runtimes auto --n 96 --concurrency "$CLIENTS")
else
  MARGS=(--tiny --runtimes torch,auto --n 16 --concurrency "$CLIENTS")
fi
"$PY" bench/models.py "${MARGS[@]}" --out "$OUT/models-work" 2>"$OUT/models.log" | tee "$OUT/models.txt" >&2
cp "$OUT"/models-work/models-*.json "$OUT/models.json" 2>/dev/null || true
rm -rf "$OUT/models-work/src-"* "$OUT/models-work/repo"

if command -v tritonserver >/dev/null && [ -d /opt/tritonserver/backends/onnxruntime ] && [ "$DEVICE" = gpu ]; then
  step "native onnxruntime + TensorRT FP16 (NGC Triton on PATH): load check of repo-onnxruntime-gpu"
  tritonserver --model-repository="$OUT/repo-onnxruntime-gpu" --http-port 18000 --grpc-port 18001 --metrics-port 18002 \
    >"$OUT/tritonserver-onnxruntime.log" 2>&1 &
  TPID=$!
  for _ in $(seq 1 180); do curl -sf localhost:18000/v2/health/ready >/dev/null 2>&1 && break; sleep 1; done
  curl -sf localhost:18000/v2/health/ready && echo "native repository ready" | tee -a "$OUT/timings.txt" >&2 || true
  kill "$TPID" 2>/dev/null || true
fi

step "ingest ($N images) + query ($CLIENTS clients) on the embedded stack ($DEVICE)"
BENCH_WEIGHTS=$([ "$VARIANT" = --full ] && echo --full || echo "")
# A --cpu run is a test of this script: it leaves the committed bench/RESULTS.md as it was.
[ "$MODE" = cpu ] && cp bench/RESULTS.md "$OUT/RESULTS.before.md"
# shellcheck disable=SC2086
"$PY" -m bench all $BENCH_WEIGHTS --device "$DEVICE" --skip baseline,scaling "${SIZE_ARGS[@]}" \
  2>"$OUT/bench.log" | tee "$OUT/bench.txt" >&2
for f in ingest query footprint; do cp "bench/out/$f.json" "$OUT/bench-$f.json" 2>/dev/null || true; done
cp bench/RESULTS.md "$OUT/RESULTS-device.md"
[ "$MODE" = cpu ] && cp "$OUT/RESULTS.before.md" bench/RESULTS.md

step "done: tables in $OUT"
ls -1 "$OUT" >&2
