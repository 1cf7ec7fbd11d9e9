#!/usr/bin/env bash
# Make a base image for container/Dockerfile where no image registry can be reached:
# a Debian bookworm root filesystem (Python 3.11) from Debian's mirror, with a venv at
# /opt/venv holding torch, imported into the local Docker engine.
#
#   sudo container/build_local_base.sh agir-base:bookworm-py311 [torch==2.13.0]
#   docker build --network host --build-arg BASE_IMAGE=agir-base:bookworm-py311 \
#       -f container/Dockerfile -t agir-retrain:local .
#
# Needs root, debootstrap, and network access to Debian's mirror and PyPI (or a wheel
# directory in PIP_FIND_LINKS). The host's CA bundle is copied in and pip pointed at it, so
# builds behind a TLS-inspecting proxy (whose CA the host trusts) can reach PyPI.
# On a machine that can pull, use a CUDA PyTorch image instead.
set -euo pipefail
tag=${1:-agir-base:bookworm-py311}
torch_spec=${2:-torch==2.13.0}
rootfs=$(mktemp -d /tmp/agir-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" http://deb.debian.org/debian
chroot "$rootfs" python3 -m venv /opt/venv
# The host's pip resolves torch (its find-links may hold a local CPU wheel); install into the venv.
python3 -m pip install --quiet --target "$rootfs/opt/venv/lib/python3.11/site-packages" "$torch_spec"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/host-ca-bundle.crt"
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'CMD ["/bin/bash"]' - "$tag"
echo "imported $tag"
