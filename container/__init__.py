"""Package data: the GPU image (Dockerfile, entry point, pins), accelerate configs, job templates."""
