"""Settings of where the training job runs: how it is launched (accelerate) and submitted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from agir_retrain.tasks.settings.base import Section


class LaunchSettings(Section):
    """How the training program is launched (accelerate)."""

    num_processes: PositiveInt = Field(
        1,
        description="Processes (one per GPU); more than one launches through `accelerate launch`.",
    )
    accelerate_config: str | None = Field(
        None,
        description="An accelerate config: single_gpu, ddp or fsdp_qlora (container/accelerate/) "
        "or a path; None means single_gpu for one process and ddp for several.",
    )
    main_process_port: PositiveInt = Field(
        29500, description="Rendezvous port of a multi-process launch."
    )
    cpu_threads_per_process: PositiveInt | None = Field(
        None,
        description="CPU threads of each process (OMP_NUM_THREADS); None: the CPUs this process "
        "may use divided by num_processes, or OMP_NUM_THREADS where it is set (accelerate "
        "alone gives one thread to a launch that is not marked CPU-only).",
    )


class SubmitSettings(Section):
    """Where the training job runs: this machine, a Docker engine, or a Prefect GPU work pool."""

    backend: Literal["local", "docker", "prefect"] = Field(
        "local",
        description="local: `accelerate launch` here; docker: build container/Dockerfile and run "
        "it on the Docker engine (every GPU requested when the host has some); prefect: run the "
        "`train` deployment on a GPU work pool and fetch its outputs from shared storage.",
    )
    image: str = Field(
        "agir-retrain", description="Image repository; the tag is the build context's hash."
    )
    base_image: str | None = Field(
        None,
        description="BASE_IMAGE build argument (a CUDA PyTorch image); None keeps the Dockerfile's.",
    )
    build_network: str | None = Field(
        None,
        description="Network of the docker build (e.g. host, where builds cannot reach PyPI otherwise).",
    )
    gpus: Literal["auto", "all", "none"] = Field(
        "auto",
        description="GPUs for the docker job: auto requests every GPU when the host has some.",
    )
    deployment: str = Field(
        "train/train-docker-gpu",
        description="Prefect deployment (flow/deployment) the prefect backend runs.",
    )
    work_pool_type: Literal["docker", "kubernetes", "process"] = Field(
        "docker", description="Kind of the deployment's work pool: decides the GPU job variables."
    )
    gpus_per_job: PositiveInt = Field(
        1, description="GPUs a prefect job asks for (Kubernetes nvidia.com/gpu limit)."
    )
    shared_storage: str | None = Field(
        None,
        description="fsspec URL both sides see (s3://bucket/runs, or file:// on a shared "
        "filesystem); the prefect backend uploads a local dataset's training and eval files "
        "there, and the job writes its outputs there to be fetched into `out`. None: the "
        "dataset and `out` must themselves be such URLs.",
    )
    timeout_s: PositiveInt = Field(
        24 * 3600,
        description="Longest a submitted job may run, in seconds; past it the job (its whole "
        "process group, or its container) is stopped and reported as timed out.",
    )
    network: bool = Field(
        False,
        description="Give the docker job a network. Off: it can reach nothing, so the base model "
        "must be a local folder (or builtin:tiny); on: a hub id is downloaded inside.",
    )
    memory_limit: str | None = Field(
        "64g",
        description="Memory cap of the docker job (docker's --memory: 512m, 64g, or bytes), "
        "swap included; None: no cap.",
    )
    pids_limit: PositiveInt | None = Field(
        4096, description="Most processes and threads the docker job may run; None: no cap."
    )
    shm_size: str | None = Field(
        "8g",
        description="Size of the docker job's /dev/shm (torch data workers and NCCL use it); "
        "None: docker's 64m.",
    )
    container_user: str | None = Field(
        None,
        description="uid:gid the docker job runs as (never root); None: the caller's, or "
        "1000:1000 (the image's agir user) when the caller is root.",
    )
