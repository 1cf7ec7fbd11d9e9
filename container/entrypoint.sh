#!/bin/sh
# Run the training program under `accelerate launch`; the arguments go to the program
# (python -m agir_retrain.tasks.training --help lists them). ACCELERATE_CONFIG and NUM_PROCESSES choose
# the launch: container/accelerate/{single_gpu,ddp,fsdp_qlora}.yaml.
set -eu
exec python -m accelerate.commands.launch \
    --config_file "${ACCELERATE_CONFIG:-/app/agir_retrain/container/accelerate/single_gpu.yaml}" \
    --num_processes "${NUM_PROCESSES:-1}" \
    -m agir_retrain.tasks.training "$@"
