#!/usr/bin/env bash
# One GPU check of the whole package on one H100/H200, in at most 9 minutes, every figure in $OUT.
#
#   bash benchmarks/gpu_check.sh                        # on the GPU machine, from the repo root
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   # CPU mode: tiny sizes (tests/test_paper_scale.py runs it)
#
# Parts, each under its own time limit (seconds, CUDA mode) so that the sum stays inside 9 minutes:
#   env         15  GPU, driver, torch, package versions
#   pretrain    80  benchmarks/pretrain.py: lightly's recipe vs this stage vs the bare network (SimCLR, ResNet-18, 32x32)
#   adv_image   45  benchmarks/adversarial.py: PGD-10 AT step, this stage vs torchattacks (ResNet-18, 32x32)
#   adv_clip    45  the same on r3d_18 clips
#   evaluate    80  benchmarks/evaluate.py: PGD-10 vs torchattacks, AutoAttack via the stage vs pyautoattack
#   cuda_tests  60  the CUDA-only tests (pytest -k cuda: the skipif-CUDA tests of tests/)
#   paper      150  tests/test_paper_scale.py on CUDA: both study files, every stage, real sizes, bf16
#   ddp         30  python -m pipeline.distributed (DDP vs one process), only where >1 GPU is visible
#   plan         5  python -m pipeline.plan for both studies with the GPU's name (forecast as of this run)
# Total 510 s + wheel install; a part past its limit is killed and recorded (rc 124) and the rest go on.
#
# Files in $OUT (the device returns at most 8): summary.tsv (part, rc, seconds, limit), gpu_check.log
# (every part's output), pretrain.json, paper_scale.json, env.txt, plan.txt. The RESULTS.md rows
# and pipeline/plan/anchors.py's throughput table are filled from them.
#
# Packages the device image lacks travel as wheels in .whl/ (carry: [".whl"]); fetch them here once:
#   bash benchmarks/gpu_check.sh fetch-wheels
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# What the device image lacks (its list: /work/.library/device/KINDS.md), at the versions CI uses. Snakemake
# itself does not travel (too large): pipeline.plan fills the schema defaults through jsonschema alone.
# lightly (benchmarks/pretrain.py's (a)) travels with its own needs; without it (a) is skipped, not failed.
WHEELS=(av==18.1.0 decord==0.6.0 torchattacks==3.5.1 pyautoattack==0.2.0
        pytorchvideo==0.1.5 fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor==3.3.0 parameterized==0.9.0
        jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
        lightly lightly-utils aenum hydra-core omegaconf antlr4-python3-runtime==4.9.3)

if [ "${1:-}" = fetch-wheels ]; then  # here, not on the device: it has no registry
    exclude="$(git rev-parse --git-common-dir)/info/exclude"  # the wheels travel with `carry`, never in a commit
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
    mkdir -p .whl
    for w in "${WHEELS[@]}"; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 -d .whl "$w" 2>/dev/null \
        || "$PY" -m pip wheel -q --no-deps -w .whl "$w" \
        || echo "could not fetch $w"  # sdist-only pure-Python packages (pytorchvideo, fvcore, iopath) are built here
    done
    du -sh .whl
    exit 0
fi

DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
printf 'part\trc\tseconds\tlimit_s\n' > "$OUT/summary.tsv"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if compgen -G ".whl/*.whl" > /dev/null; then  # carried wheels (device README: --no-index, --target)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site .whl/*.whl \
        >> "$LOG" 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_site"
fi

# Snakemake does not travel (its dependency tree is too large for the 64 MiB carry); what the
# benchmarks and tests take from it is `snakemake.utils.validate` (schema defaults), which a
# stand-in on PYTHONPATH provides through pipeline.plan.fill_defaults (tested equal to Snakemake's).
if ! "$PY" -c "import snakemake.utils" 2> /dev/null; then
    mkdir -p /tmp/gpu_check_shim/snakemake
    : > /tmp/gpu_check_shim/snakemake/__init__.py
    printf '%s\n' '"""Stand-in for snakemake.utils.validate on a GPU node without Snakemake (benchmarks/gpu_check.sh)."""' \
        'def validate(data, schema, set_default=True):' \
        '    from pipeline.plan import fill_defaults' \
        '    fill_defaults(data, schema, set_default)' > /tmp/gpu_check_shim/snakemake/utils.py
    export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_shim"
    echo "snakemake.utils: stand-in (pipeline.plan.fill_defaults)" >> "$LOG"
fi

# part NAME LIMIT_S COMMAND...: run it under its limit, its output appended to the log, one summary row.
part() {
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name (limit ${limit}s): $*" >> "$LOG"
    start=$(date +%s%N)
    timeout -k 5 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000000 ))" "$limit" >> "$OUT/summary.tsv"
    echo "=== $name: rc $rc" >> "$LOG"
}

if [ "$DEVICE" = cpu ]; then  # tiny sizes: proves every part runs, figures are not GPU figures
    L_BENCH=300; L_TEST=120; L_PAPER=120  # a loaded 2-core CI box; the parts take 10-60 s on an idle one
    PAPER_SELECT=(-k shrink)  # the real-size stage test itself runs in CI
    ADV_STEPS=(--steps 1 --rounds 1)
    PRETRAIN_SIZE=(--batch 16 --batches 1 --warm 1 --rounds 1 --workers 1 --clip-frames 4 --clip-size 32 --clip-batch 2)
else
    L_BENCH=80; L_TEST=60; L_PAPER=150
    PAPER_SELECT=()
    ADV_STEPS=(--rounds 3)
    PRETRAIN_SIZE=()  # the benchmark's CUDA defaults: batch 512, a full epoch, 16x112x112 clips
fi

part env 15 bash -c "nvidia-smi 2>/dev/null; $PY -c 'import torch, sys; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), torch.cuda.device_count())'; $PY -m pip list 2>/dev/null | grep -iE 'torch|av|decord|autoattack|lightly|snakemake|jsonschema|numpy'" 
cp "$LOG" "$OUT/env.txt"
part pretrain "$L_BENCH" "$PY" benchmarks/pretrain.py --device "$DEVICE" "${PRETRAIN_SIZE[@]}" --json "$OUT/pretrain.json"
part adv_image $((L_BENCH * 9 / 16)) "$PY" benchmarks/adversarial.py --device "$DEVICE" --modality image "${ADV_STEPS[@]}"
part adv_clip $((L_BENCH * 9 / 16)) "$PY" benchmarks/adversarial.py --device "$DEVICE" --modality clip "${ADV_STEPS[@]}"
if [ "$DEVICE" = cpu ]; then  # the benchmark has no size flags: its CPU sizes cut to a few images here
    part evaluate "$L_BENCH" "$PY" -c "import benchmarks.evaluate as b; s = b.sizes('cpu'); b.sizes = lambda d: {**s, 'pgd_n': 32, 'aa_n': 8, 'batch': 32, 'aa': {'steps': 2, 'square_queries': 10, 'n_target_classes': 9}, 'rounds': 1}; b.main(['--device', 'cpu'])"
else
    part evaluate "$L_BENCH" "$PY" benchmarks/evaluate.py --device "$DEVICE"
fi
part cuda_tests "$L_TEST" "$PY" -m pytest -q -x -k cuda -p no:cacheprovider tests/test_pretrain.py tests/test_adversarial.py tests/test_distributed.py
part paper "$L_PAPER" env PAPER_SCALE_REPORT="$OUT/paper_scale.json" "$PY" -m pytest -q -x -p no:cacheprovider "${PAPER_SELECT[@]}" tests/test_paper_scale.py
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "${GPUS:-0}" -gt 1 ]; then
    part ddp 30 "$PY" -m pipeline.distributed
else
    printf 'ddp\tskipped (%s GPU)\t0\t30\n' "${GPUS:-0}" >> "$OUT/summary.tsv"
fi
GPU_NAME=$("$PY" -c 'import torch; n = torch.cuda.get_device_name(0).lower() if torch.cuda.is_available() else ""; print("h200" if "h200" in n else "h100")' 2>/dev/null || echo h100)
part plan 10 bash -c "for s in config/cifar10_ucf101.yaml config/cifar100_hmdb51.yaml; do $PY -m pipeline.plan --configfile \$s --gpu $GPU_NAME | sed -n '/^total/,\$p'; done > '$OUT/plan.txt'"
[ -s "$OUT/paper_scale.json" ] || echo '{}' > "$OUT/paper_scale.json"
[ -s "$OUT/pretrain.json" ] || echo '{}' > "$OUT/pretrain.json"

column -t -s "$(printf '\t')" "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
! awk -F'\t' 'NR > 1 && $2 != "0" && $2 !~ /^skipped/ {bad = 1} END {exit !bad}' "$OUT/summary.tsv"
