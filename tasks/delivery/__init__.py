"""Where training runs (local, docker, prefect), docker jobs, archives."""
