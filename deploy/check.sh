#!/usr/bin/env bash
# Validates the deploy kit with the tools the file formats have, beyond what `cargo test` checks
# (tests/it/deploy.rs: series on a live /metrics, promtool, `parapet check`, the status page in
# Chromium). Needs network access to PyPI for its two Python tools, installed into
# target/deploy-check-venv; uses `docker compose` and `kubectl` when they are installed.
#
#   deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-check-venv
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q check-jsonschema kubernetes-validate
fi

echo "== compose: the Compose Specification's JSON schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
if docker compose version >/dev/null 2>&1; then
    echo "== compose: docker compose config"
    (cd deploy/compose && docker compose config --quiet)
fi

echo "== prometheus: promtool"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)
# The scrape config names the rule file by its path inside the Prometheus container.
config=$(mktemp --suffix=.yml)
sed "s#/etc/prometheus/alerts.yml#$PWD/deploy/prometheus/alerts.yml#" deploy/compose/prometheus.yml >"$config"
promtool check config "$config"
rm -f "$config"

echo "== grafana: JSON"
python3 -m json.tool deploy/grafana/parapet.json >/dev/null && echo "deploy/grafana/parapet.json: ok"

echo "== kubernetes: schemas of 1.30 (the first with the preStop sleep action on by default) and 1.37"
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize deploy/k8s >"$rendered"
else
    echo "(kubectl not installed: the manifests are checked without the kustomize rendering)"
    cat deploy/k8s/deployment.yaml <(echo ---) deploy/k8s/service.yaml <(echo ---) \
        deploy/k8s/pdb.yaml >"$rendered"
fi
for version in 1.30.0 1.37.0; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered"
done
echo "deploy kit: all checks passed"
