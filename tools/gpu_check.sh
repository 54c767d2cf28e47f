#!/usr/bin/env bash
# The GPU target's device checks (issue 14) as one prepared run for a lent GPU machine, which
# has torch, Triton and Inductor but no torchvision and no package registry. Each stage has its
# own time limit and writes under $OUT as it finishes, so a stage that runs long costs only
# itself. Bring the torchvision wheel that matches the machine's torch first (ignored by git):
#   pip download torchvision==0.26.0 --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 --only-binary=:all: -d build/gpu_wheels
# and run it with build/gpu_wheels carried:
#   OUT=... bash tools/gpu_check.sh                      # every stage
#   STAGES="tests probe" OUT=... bash tools/gpu_check.sh  # some of them
# TARGET=torch-cpu runs the same stages on a CPU (small sizes) to check the script itself.
set -u
OUT=${OUT:?set OUT to the folder results go to}
TARGET=${TARGET:-cuda}
STAGES=${STAGES:-"tests probe table"}
PY=${PY:-python}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/gpu_check.log"; }

if [ "$TARGET" = cuda ]; then
    "$PY" -m pip install -q --no-deps -e . >>"$OUT/gpu_check.log" 2>&1
    ls build/gpu_wheels/*.whl >/dev/null 2>&1 && "$PY" -m pip install -q --no-deps build/gpu_wheels/*.whl >>"$OUT/gpu_check.log" 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$OUT/gpu_check.log" 2>&1
    SIZE1=56 SIZE32=28 CASE=resnet18@224x1 VARIANTS=20
else
    SIZE1=8 SIZE32=8 CASE=smallcnn@16x1 VARIANTS=2
fi
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/gpu_check.log"

for stage in $STAGES; do
    log "stage $stage"
    case $stage in
    tests)  # the GPU-marked tests, and the torch target's own
        timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or not slow" tests/test_torch_target.py \
            tests/test_targets.py >"$OUT/gpu_tests.log" 2>&1
        log "tests exit $?: $(tail -1 "$OUT/gpu_tests.log")" ;;
    probe)  # the channel staircase at batch 1 and a throughput batch
        for b in 1 32; do
            size=$([ $b = 1 ] && echo "$SIZE1" || echo "$SIZE32")
            timeout 200 "$PY" -m compiler.cli probe-step --target "$TARGET" --batch $b --size "$size" --quiet \
                --out "$OUT/probe_step_${TARGET}_b$b.json" >>"$OUT/gpu_check.log" 2>&1
            log "probe b$b exit $?"
        done ;;
    table)  # a table on the GPU, predicted against measured engines beside the unpruned one
        timeout 300 "$PY" tools/bench_latency_model.py --target "$TARGET" --cases "$CASE" --variants "$VARIANTS" \
            --off-step 0 --grid-points 4 --profile-variants 8 --profile-off-step-variants 0 \
            --table "$OUT/table_$TARGET.json" --out "$OUT/bench_latency_model_$TARGET.json" >>"$OUT/gpu_check.log" 2>&1
        log "table exit $?" ;;
    *) log "unknown stage $stage" ;;
    esac
done
