#!/bin/sh
# Run the training program under `accelerate launch`; the arguments go to the program
# (python -m agir_retrain.tasks.training --help lists them). ACCELERATE_CONFIG and NUM_PROCESSES choose
# the launch: container/accelerate/{single_gpu,ddp,fsdp_qlora}.yaml.
# Each rank gets its share of the container's CPUs (accelerate alone would give it one).
set -eu
processes="${NUM_PROCESSES:-1}"
cpus=$(python -c "import os; print(len(os.sched_getaffinity(0)))")  # images may lack nproc
threads="${OMP_NUM_THREADS:-$(( cpus / processes ))}"
[ "$threads" -ge 1 ] || threads=1
exec python -m accelerate.commands.launch \
    --config_file "${ACCELERATE_CONFIG:-/app/agir_retrain/container/accelerate/single_gpu.yaml}" \
    --num_processes "$processes" \
    --num_cpu_threads_per_process "$threads" \
    -m agir_retrain.tasks.training "$@"
