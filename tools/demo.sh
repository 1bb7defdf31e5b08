#!/usr/bin/env bash
# The whole job on the embedded demo data, on 2 CPU cores in about 7 minutes: set up a virtual
# environment, train on Demo_Hazy (generated on first use), evaluate the best checkpoint on its test
# split, and count the people in the pictures of assets/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt pytest==9.2.0 ruff==0.17.6
# From scratch (no ImageNet download), with a higher learning rate than P2PNet's that drops tenfold
# later on, so that a few minutes of CPU time learn to count. Where bf16 runs natively (CUDA, CPUs
# with AVX512-BF16/AMX) --amp makes a step ~3x cheaper, and the time saved goes into more epochs.
# (An error here stops the script: it must not fall back to the slow schedule without a word.)
native_bf16=$(.venv/bin/python -c "import torch; from models.precision import autocast_dtype
print(int(autocast_dtype('cuda' if torch.cuda.is_available() else 'cpu') != torch.float32))")
if [ "$native_bf16" = 1 ]; then
    schedule=(--amp --epochs 32 --lr_drop 20 --eval_freq 4)
else
    schedule=(--epochs 12 --lr_drop 8 --eval_freq 2)
fi
.venv/bin/python train.py --dataset_file Demo_Hazy --backbone_weights none --output_dir runs/demo --resume auto \
    "${schedule[@]}" --batch_size 4 --num_crops 2 --lr 5e-4 --lr_backbone 5e-4
.venv/bin/python run_test.py --dataset_file Demo_Hazy --weight_path runs/demo/best_mae.pth --output_dir runs/demo/eval
.venv/bin/python run_test.py --weight_path runs/demo/best_mae.pth --input assets/demo --output_dir runs/demo/counted \
    --save_restored
