#!/usr/bin/env bash
# Everything a CUDA GPU adds, in one run of at most 8 minutes on one GPU, ending in one table:
#   1. a CUDA torch in .venv (installed when the one there has no CUDA);
#   2. the CUDA tests (every test marked requires_cuda must run, none may skip);
#   3. every seed's fla path against its PyTorch path, values and gradients;
#   4. fwd+bwd time of every seed against fla's layer of the same name, and of each asiarch.kernels
#      kernel against a comparable fla kernel (goals: 1.2x);
#   5. a paper_20m campaign of 2 candidates with a few hundred steps (offline proposer, python-docs corpus).
#
#   bash scripts/gpu_check.sh             on the GPU machine (its table also lands in $OUT or ./gpu_check/)
#   bash scripts/gpu_check.sh --dry-run   anywhere: checks that every part exists and builds, runs nothing on a GPU
#
# ASIARCH_TORCH_INDEX: the wheel index of the CUDA torch (default below); GPU_CHECK_STEPS: the campaign's steps.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUTDIR=${OUT:-$PWD/gpu_check}; mkdir -p "$OUTDIR"
ROWS=$OUTDIR/rows.jsonl; : > "$ROWS"
PY=.venv/bin/python
TORCH_INDEX=${ASIARCH_TORCH_INDEX:-https://download.pytorch.org/whl/cu130}
STEPS=${GPU_CHECK_STEPS:-300}
START=$(date +%s)
row() {  # part item value goal ok(true/false/null)
    printf '{"part": "%s", "item": "%s", "value": "%s", "goal": "%s", "ok": %s}\n' "$1" "$2" "$3" "$4" "$5" >> "$ROWS"
    echo "$1: $2: $3"
}
elapsed() { echo $(( $(date +%s) - START )); }

# 1. A CUDA torch. setup.sh with ASIARCH_CONSTRAINTS=none keeps the torch it finds instead of the CPU pin.
TORCH_VERSION=$(grep -oP '^torch==\K[0-9.]+' constraints/cpu.txt)
if [ $DRY = 1 ]; then
    [ -n "$TORCH_VERSION" ] && grep -q 'ASIARCH_CONSTRAINTS=none' scripts/setup.sh \
        && row setup "CUDA torch install" "would run: pip install torch==$TORCH_VERSION --index-url $TORCH_INDEX" "planned" true \
        || row setup "CUDA torch install" "no torch pin or setup.sh lacks ASIARCH_CONSTRAINTS=none" "planned" false
else
    if ! [ -x $PY ] || ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        [ -x $PY ] || python3 -m venv .venv
        echo "gpu_check: installing torch==$TORCH_VERSION from $TORCH_INDEX"
        $PY -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX" \
            && ASIARCH_CONSTRAINTS=none bash scripts/setup.sh >/dev/null
    fi
    if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        row setup "CUDA torch" "$($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')" "cuda" true
    else
        row setup "CUDA torch" "no CUDA device visible to torch after install" "cuda" false
        $PY scripts/gpu_check.py table --rows "$ROWS"; exit 1
    fi
fi

# 2. The CUDA tests: the files that use requires_cuda; a CUDA skip on a GPU machine is a failure.
CUDA_FILES=$(grep -l "requires_cuda" tests/test_*.py | tr '\n' ' ')
cuda_tests() {
if [ $DRY = 1 ]; then
    n=$(cat $CUDA_FILES | grep -c "^@requires_cuda")  # each file must also import: the suite collects them all
    row tests "CUDA tests defined" "$n test functions in $(echo $CUDA_FILES | wc -w) files" "> 0" $([ "$n" -gt 0 ] && echo true || echo false)
else
    $PY -m pytest -q -rs -p no:cacheprovider $CUDA_FILES > "$OUTDIR/cuda_tests.log" 2>&1; rc=$?
    skips=$(grep -c "needs a CUDA GPU" "$OUTDIR/cuda_tests.log")
    summary=$(tail -1 "$OUTDIR/cuda_tests.log" | tr -d '=' | sed 's/^ *//;s/"//g')
    row tests "CUDA tests ($(elapsed) s in)" "$summary" "pass, 0 CUDA skips" $([ $rc = 0 ] && [ "$skips" = 0 ] && echo true || echo false)
fi
}

# 3-4. Paths and speed (the Python half adds its own rows).
paths_and_speed() {
if [ $DRY = 1 ]; then
    $PY scripts/gpu_check.py dry-run --rows "$ROWS" || row dry-run "gpu_check.py dry-run" "crashed" "runs" false
else
    $PY scripts/gpu_check.py paths --rows "$ROWS" || row paths "gpu_check.py paths" "crashed (see above)" "runs" false
    $PY scripts/gpu_check.py speed --rows "$ROWS" || row speed "gpu_check.py speed" "crashed (see above)" "runs" false
fi
}

# 5. A paper_20m campaign: 2 candidates, explore and verify at paper_20m widths for a few hundred steps.
CAMPAIGN=(scale=paper_20m llm=offline campaign.max_candidates=2 'seeds=[deltanet]' "run.output_dir=$OUTDIR/runs"
    scale.corpus.source=python_docs scale.corpus.tokenizer_vocab_size=8192 scale.train.batch_size=32
    scale.stages.explore_steps=$STEPS scale.stages.verify_scale=null scale.stages.verify_steps=$STEPS
    scale.stages.reports_per_trial=4 scale.train.warmup_steps=30 scale.train.report_every=50
    scale.train.eval_batches=8 scale.downstream.limit=20 'explore.anchor_seeds=[0,1]' 'verify.training_seeds=[0,1]'
    run.gpus_per_trial=0.25 run.cpus_per_trial=2 checks.complexity_repeats=2 campaign.max_wall_hours=0.08)
campaign() {
if [ $DRY = 1 ]; then
    if $PY -c "import sys; from asiarch import Campaign; c = Campaign(overrides=sys.argv[1:]); print(c.scale.name, c.scale.train.batch_size)" \
        "${CAMPAIGN[@]}" > "$OUTDIR/campaign_config.log" 2>&1; then
        row campaign "paper_20m config composes" "$(tail -1 "$OUTDIR/campaign_config.log")" "valid" true
    else
        row campaign "paper_20m config composes" "$(tail -1 "$OUTDIR/campaign_config.log" | tr -d '"' | cut -c1-60)" "valid" false
    fi
else
    t0=$(date +%s)
    timeout 330 .venv/bin/asiarch run "${CAMPAIGN[@]}" > "$OUTDIR/campaign.log" 2>&1; rc=$?
    status=$(.venv/bin/asiarch status --dir "$OUTDIR/runs" --json 2>/dev/null \
        | $PY -c "import json,sys; s=json.load(sys.stdin); print(s['status'], 'trained', s['trained'], 'verified', s['verified'])" 2>/dev/null)
    row campaign "paper_20m, 2 candidates, $STEPS steps" "${status:-no status} in $(( $(date +%s) - t0 )) s" "finished" \
        $([ $rc = 0 ] && echo true || echo false)
fi
}

if [ $DRY = 1 ]; then  # nothing here needs the GPU or the others: check them side by side
    cuda_tests & paths_and_speed & campaign & wait
else  # one after another: each needs the GPU to itself
    cuda_tests; paths_and_speed; campaign
fi

row total "wall time" "$(elapsed) s" "<= 480 s" $([ "$(elapsed)" -le 480 ] && echo true || echo false)
$PY scripts/gpu_check.py table --rows "$ROWS"
