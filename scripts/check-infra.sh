#!/usr/bin/env bash
# Static checks of the deployment files; run by test/infra.test.ts (npm test).
#   1. yamllint (infra/yamllint.yml) over docker-compose.yml and infra/k8s.
#      Installed from Debian's packages when missing and we are root.
#      Then the shell scripts of infra/k8s parse (bash -n; shellcheck when installed),
#      and `kubectl kustomize infra/k8s` renders when kubectl is installed.
#   2. docker-compose.yml against the Compose Specification:
#      - `docker compose config -q` when the Compose v2 plugin is there (no engine needed);
#      - otherwise the compose-spec JSON schema, through dclint (a devDependency),
#        which ships a current copy of the schema. Debian's docker-compose
#        package is Compose v1 (1.29): it rejects the spec's top-level `name` and
#        `build.additional_contexts`, so it cannot judge this file.
# Idempotent; a few seconds once yamllint is installed and dclint is in npm's cache.
set -euo pipefail
cd "$(dirname "$0")/.."

compose_file=docker-compose.yml
env_file=.env.example
say() { echo "check-infra: $*" >&2; }

# --- 1. yamllint ------------------------------------------------------------------
if ! command -v yamllint >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing yamllint from Debian's packages"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yamllint >/dev/null
  else
    say "yamllint is not installed: run 'sudo apt-get install -y yamllint' (or this script as root)"
    exit 1
  fi
fi
yamllint --strict -f parsable -c infra/yamllint.yml "$compose_file" infra/k8s
say "yamllint: $compose_file and infra/k8s are clean"

for script in infra/k8s/*.sh; do
  [ -e "$script" ] || continue
  bash -n "$script"
  if command -v shellcheck >/dev/null 2>&1; then shellcheck "$script"; fi
done
say "infra/k8s scripts parse"
if command -v kubectl >/dev/null 2>&1; then
  # Offline: kustomize builds the manifests without a cluster (unknown files, bad patches, images).
  kubectl kustomize infra/k8s >/dev/null
  say "kubectl kustomize: infra/k8s renders"
fi

# --- 2. the Compose file ------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
  # Interpolates with .env.example, so a variable missing there fails here too.
  docker compose --env-file "$env_file" -f "$compose_file" config -q
  say "docker compose config: $compose_file is valid"
  exit 0
fi

dclint=node_modules/.bin/dclint
say "no Docker Compose v2 plugin: checking $compose_file against the compose-spec schema (dclint)"
if [ ! -x "$dclint" ]; then
  say "dclint (the compose-spec schema validator) is missing: run 'npm ci'"
  exit 1
fi
# dclint always checks YAML validity and the compose-spec schema; its style rules
# (key order, alphabetical services, quoted ports, ...) are opinions this project
# does not follow, so only those two results count.
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
# dclint exits 1 on any finding, style included: the JSON report decides below.
report=$("$dclint" --formatter json "$compose_file" 2>"$errors") || true
if [ -z "$report" ]; then
  cat "$errors" >&2
  say "could not run dclint"
  exit 1
fi
REPORT=$report node -e '
  let files;
  try { files = JSON.parse(process.env.REPORT); } catch { console.error("check-infra: dclint did not answer in JSON:\n" + process.env.REPORT); process.exit(1); }
  const fatal = files.flatMap((f) => f.messages.filter((m) => m.rule === "invalid-yaml" || m.rule === "invalid-schema").map((m) => `${f.filePath}:${m.line}:${m.column}: ${m.rule}: ${m.message}`));
  if (fatal.length) { console.error(fatal.join("\n")); process.exit(1); }
  if (!files.length) { console.error("check-infra: dclint checked no file"); process.exit(1); }
'
say "compose-spec schema: $compose_file is valid"
