#!/usr/bin/env bash
# Prints the Kubernetes Secret `registry-cluster` with a fresh cluster secret and a fresh first
# admin key, and writes the admin key to ADMIN_KEY_FILE (mode 0600) for `registryctl
# --key-file`. Nothing is written anywhere else; never commit the output.
#
#   deploy/k8s/make-secret.sh ~/.registry/admin-key | kubectl apply -f -
#
# REGISTRYCTL: the registryctl binary (default target/release/registryctl).
set -euo pipefail
admin_out=${1:?usage: make-secret.sh ADMIN_KEY_FILE}
ctl=${REGISTRYCTL:-$(dirname "$0")/../../target/release/registryctl}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ctl" gen-secret --out "$tmp/cluster-secret"
"$ctl" gen-secret --key-id admin --out "$tmp/admin-key"
install -m 0600 "$tmp/admin-key" "$admin_out"
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: registry-cluster
  labels:
    app.kubernetes.io/part-of: registry
type: Opaque
data:
  cluster-secret: $(base64 -w0 <"$tmp/cluster-secret")
  admin-key: $(base64 -w0 <"$tmp/admin-key")
YAML
