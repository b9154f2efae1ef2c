#!/usr/bin/env bash
# Decoder training on a lent GPU machine in one command (untested on a GPU so far).
#
# Continues the pretraining line (weights/default/training/pretrained_decoder, the newest pretrained decoder,
# not the fine-tuned one of weights/default) on a carried graph file (``train pack-graphs``) for a time budget,
# then writes to $OUT what comes back: decoder.safetensors (the decoder alone, 7.6 MiB), model_config.json,
# log.jsonl, run_config.json and train.log. Run from the repository root:
#
#   bash benchmarks/gpu_decoder_run.sh [GRAPHS [BUDGET [INIT]]]
#   defaults: runs/graphs.npz 9m weights/default/training/pretrained_decoder
#
# Tuning by environment: BATCH (256), LR (0.001), THREADS (4, torch), ENV_WORKERS (12 processes for the
# environment features, computed on the CPU), PRECISION (bf16: autocast of the network pass, same held-out
# loss as float32 in a paired CPU run, benchmarks/README.md; fp32 to switch it off), DEVICE (cuda; cpu for a
# dry run here), EXTRA (more options).
# The machine has no RDKit or matchms; the path needs neither (README "Training and evaluation").
set -uo pipefail
GRAPHS=${1:-runs/graphs.npz}
BUDGET=${2:-9m}
INIT=${3:-weights/default/training/pretrained_decoder}
OUT=${OUT:-/tmp/gpu_decoder_out}
RUN=${RUN:-/tmp/gpu_decoder_run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MATCHMS_DIFFMS_LOAD_PLUGINS= PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 -m matchms_diffms.train.cli decoder --out "$RUN" --graphs "$GRAPHS" --init-from "$INIT" \
        --device "${DEVICE:-cuda}" --batch-size "${BATCH:-256}" --lr "${LR:-0.001}" --schedule constant \
        --threads "${THREADS:-4}" --env-workers "${ENV_WORKERS:-12}" --time-budget "$BUDGET" \
        --precision "${PRECISION:-bf16}" \
        --val-every 1000 --val-max 2048 --log-every 50 --ckpt-every 2000 --keep-checkpoints 1 --no-progress \
        ${EXTRA:-}
    status=$?
    python3 -m matchms_diffms.train.cli save-part "$RUN" --part decoder -o "$OUT" || status=1
    cp "$RUN/log.jsonl" "$RUN/run_config.json" "$OUT/" || status=1
    ls -l "$OUT"
    exit $status
} 2>&1 | tee "$OUT/train.log"
