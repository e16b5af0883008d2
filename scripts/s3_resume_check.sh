#!/usr/bin/env bash
# A campaign on an S3 endpoint (a local moto server), its driver killed mid-explore and the same command run
# again: it must resume from S3 (memory, Tune's experiment, campaign.json) and train nothing twice; then the
# verify stage (PBT) on S3, and status/top/export by URI. Not part of the test suite (about 4 minutes on 2 cores).
#   bash scripts/s3_resume_check.sh
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/.venv/bin
WORK=$(mktemp -d /tmp/asiarch-s3-XXXX) && cd "$WORK"
PORT=$($BIN/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export AWS_ACCESS_KEY_ID=check AWS_SECRET_ACCESS_KEY=check AWS_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ASIARCH_CACHE=$WORK/cache
$BIN/moto_server -H 127.0.0.1 -p "$PORT" > moto.log 2>&1 & MOTO=$!
trap 'kill $MOTO 2>/dev/null' EXIT
sleep 3 && $BIN/python -c "import boto3; boto3.client('s3').create_bucket(Bucket='check')"
RUNS=s3://check/runs
ARGS=(run.output_dir=$RUNS scale.train.eval_batches=1 scale.corpus.max_documents=80 scale.corpus.tokenizer_vocab_size=512
      scale.mqar.num_train=500 scale.mqar.num_test=100 scale.train.eval_mqar_examples=64 scale.stages.explore_steps=12
      scale.stages.verify_steps=12 scale.stages.reports_per_trial=4 scale.train.warmup_steps=2 'seeds=[deltanet]'
      llm=offline checks.complexity_repeats=2 run.max_parallel_trials=2 campaign.max_candidates=3 explore.grace_fraction=1.0
      verify.top_fraction=0.34 'verify.training_seeds=[0,1]' 'explore.anchor_seeds=[0,1]')
finished() {  # candidates with an explore result in the S3 memory
  $BIN/python - "$RUNS" <<'PY'
import sys
from asiarch.memory import Memory
from asiarch.storage import location
runs = location(sys.argv[1])
try:
    root = runs / (runs / "LATEST").read_text().strip()
    rows = Memory(root / "memory", read_only=True).list_candidates(kind="candidate")
except Exception:
    rows = []
print(" ".join(sorted(f"{c.id}:{c.explore.eval_loss}" for c in rows if c.status in ("stopped", "finished", "promoted")
                      and c.explore.eval_loss is not None)))
PY
}
start=$(date +%s)
$BIN/asiarch run "${ARGS[@]}" > first.log 2>&1 & DRIVER=$!
while kill -0 $DRIVER 2>/dev/null && [ -z "$(finished)" ]; do sleep 3; done
BEFORE=$(finished)
pkill -9 -P $DRIVER 2>/dev/null; kill -9 $DRIVER 2>/dev/null; wait $DRIVER 2>/dev/null
$BIN/ray stop --force > /dev/null 2>&1  # the driver's own local Ray (this machine runs no other)
echo "driver killed after $(( $(date +%s) - start )) s with finished: $BEFORE"
$BIN/asiarch run "${ARGS[@]}" > second.log 2>&1; echo "second run: exit $? after $(( $(date +%s) - start )) s"
grep -m1 "resuming" second.log; grep -m1 "restored Tune experiment" second.log
AFTER=$(finished)
for entry in $BEFORE; do case " $AFTER " in *" $entry "*) ;; *) echo "CHANGED: $entry"; exit 1;; esac; done
echo "unchanged after the resume: $BEFORE"
$BIN/asiarch status --dir $RUNS --json | $BIN/python -c "import json,sys; s=json.load(sys.stdin); print(s['status'], s['phase'], 'trained', s['trained'], 'verified', s['verified'])"
$BIN/asiarch top --dir $RUNS -k 3 | tail -5
$BIN/python - "$RUNS" <<'PY'
import json, sys
from asiarch.storage import location
runs = location(sys.argv[1])
root = runs / (runs / "LATEST").read_text().strip()
designs = [json.loads(p.read_text())["design"] for p in (root / "tune" / "explore").glob("*/params.json")]
print("explore trials per design:", {d: designs.count(d) for d in set(designs)})
print("verify trials:", len(list((root / "tune" / "verify").glob("*/params.json"))),
      "checkpoints left:", len(list((root / "tune" / "verify").glob("*/checkpoint_*/trainer.pt"))))
PY
