#!/usr/bin/env bash
# Validates the manifests offline against the Kubernetes API schemas shipped inside the
# kubernetes-validate package (PyPI), for the oldest supported version (1.28: the pod-index
# label) and the newest the package knows; also a Secret as make-secret.sh prints it.
# Installs kubernetes-validate into a virtualenv under target/ on first use.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(cd ../.. && pwd)
venv=${K8S_VALIDATE_VENV:-$repo/target/k8s-validate-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        echo "validate: python3 with venv is needed; installing python3-venv with apt-get" >&2
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0'
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ctl=${REGISTRYCTL:-$repo/target/release/registryctl}
REGISTRYCTL=$ctl ./make-secret.sh "$tmp/admin-key" >"$tmp/secret.yaml"
manifests=(meta.yaml data.yaml session.yaml "$tmp/secret.yaml")
for version in 1.28.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
echo "validate: ${#manifests[@]} manifest files valid for Kubernetes 1.28 and 1.37" >&2
