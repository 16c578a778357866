#!/usr/bin/env bash
# System settings the integration tests need on this kind of machine (run as root by .ci/run).
set -euo pipefail
# podman: the kernel here rejects the default ulimits (see docs in README "Containers").
if command -v podman >/dev/null && [ -w /etc ]; then
    mkdir -p /etc/containers
    if ! grep -qs 'default_ulimits' /etc/containers/containers.conf; then
        printf '[containers]\ndefault_ulimits = []\n' >> /etc/containers/containers.conf
    fi
fi
