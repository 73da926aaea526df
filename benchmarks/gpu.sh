#!/bin/bash
# The GPU figures of docs/benchmarks.md in one go: the paper preset's training-step parts at batch 32 (float32 and
# bf16) and at batch 8 beside the tiny preset's, with the 256² viewer frame and peak memory, R1 with the old and the current resampling filter, and PTI's
# time per step.  Run from the repository root with this package installed: bash benchmarks/gpu.sh [cuda:0]
set -u
DEVICE=${1:-cuda}
cd "$(dirname "$0")"
python step_costs.py --presets paper --batch 32 --viewer-res 256 --device "$DEVICE" --repeats 3
python step_costs.py --presets paper --batch 32 --viewer-res 256 --device "$DEVICE" --repeats 3 --bf16
python step_costs.py --presets paper tiny --batch 8 --viewer-res 256 --device "$DEVICE" --repeats 3
python r1_filter.py --presets paper tiny --batch 32 8 --repeats 3 --device "$DEVICE"
python pti_speed.py --preset paper --device "$DEVICE"
