#!/usr/bin/env bash
# Creates or updates the Secrets the manifests of infra/k8s read (not part of the kustomization,
# so `kubectl apply -k` never overwrites them):
#   sluice-<function>  AMQP_URL and MYSQL_URL as the function's own users, sluice_<function>,
#                      with its own password; the trigger's also TRIGGER_TOKEN, DLQ_AMQP_URL
#                      (the dead-letter operator's RabbitMQ user, sluice_dlq) and
#                      RABBITMQ_MONITOR_URL (the management API as the monitoring operator,
#                      sluice_monitor, on the host of RABBITMQ_API_URL)
#   sluice-keda        host: the management API as sluice_monitor, with the vhost of AMQP_ADMIN_URL
#                      as its path, for the KEDA triggers (TriggerAuthentication in keda.yaml)
#   sluice-migrate     MYSQL_ADMIN_URL, AMQP_ADMIN_URL, RABBITMQ_API_URL and every
#                      function's password, SLUICE_PASSWORD_<FUNCTION>, and the operator
#                      roles', SLUICE_PASSWORD_DLQ and SLUICE_PASSWORD_MONITOR, for the Job sluice-migrate
# Usage: the administrators' URLs (percent-encode special characters of their passwords); the
# functions' URLs get the same hosts, ports, database, vhost and query options:
#   MYSQL_ADMIN_URL='mysql://root:PASSWORD@mysql.example:3306/sluice' \
#   AMQP_ADMIN_URL='amqp://admin:PASSWORD@rabbitmq.example:5672' \
#   RABBITMQ_API_URL='http://admin:PASSWORD@rabbitmq.example:15672' \
#   infra/k8s/create-secrets.sh
# NAMESPACE (default sluice, the namespace of kustomization.yaml) is created when missing.
# The passwords (32 random URL-safe characters) and the token are generated on the first run
# and kept on later ones (read back from the Secrets); ROTATE=1 makes new ones: then run the
# Job sluice-migrate again and restart the Deployments. TRIGGER_TOKEN=... sets the token yourself.
# Needs kubectl (with access to the namespace) and base64; works with bash 3.2 too.
set -euo pipefail

ns=${NAMESPACE:-sluice}
functions="trigger log-lake log-clean log-alerts ev-analytics ev-store notify-email" # infra/access.ts FUNCTIONS

fail() {
  echo "create-secrets: $*" >&2
  exit 1
}
for v in MYSQL_ADMIN_URL AMQP_ADMIN_URL RABBITMQ_API_URL; do
  [ -n "${!v:-}" ] || fail "$v is required (see the usage at the top of $0)"
done
case $MYSQL_ADMIN_URL in mysql://*@*) ;; *) fail "MYSQL_ADMIN_URL must look like mysql://user:password@host:3306/database" ;; esac
case $AMQP_ADMIN_URL in amqp://*@* | amqps://*@*) ;; *) fail "AMQP_ADMIN_URL must look like amqp://user:password@host:5672[/vhost]" ;; esac
case $RABBITMQ_API_URL in http://*@* | https://*@*) ;; *) fail "RABBITMQ_API_URL must look like http://user:password@host:15672" ;; esac
command -v kubectl >/dev/null || fail "kubectl is not installed"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

# A new password: 24 random bytes as 32 URL-safe characters (what the migrate step accepts).
generate() { head -c 24 /dev/urandom | base64 | tr '+/' '-_'; }

# The value of a key of an existing Secret, or nothing (no such Secret or key, or ROTATE=1).
existing() {
  [ "${ROTATE:-0}" = 1 ] && return 0
  local data
  data=$(kubectl -n "$ns" get secret "$1" -o "jsonpath={.data.$2}" 2>/dev/null) || return 0
  if [ -n "$data" ]; then printf '%s' "$data" | base64 -d 2>/dev/null || true; fi
}

# `url` with `user:password@` as its userinfo (the last @ before the path ends the old one).
with_user() {
  local scheme=${1%%://*} rest=${1#*://}
  local authority=${rest%%[/?#]*}
  printf '%s://%s:%s@%s%s' "$scheme" "$2" "$3" "${authority##*@}" "${rest:${#authority}}"
}

# Applies Secret $1 with the KEY=VALUE lines on stdin (a file, never the command line).
apply_secret() {
  local file="$tmp/$1.env"
  cat >"$file"
  kubectl -n "$ns" create secret generic "$1" --from-env-file="$file" --dry-run=client -o yaml |
    kubectl -n "$ns" apply -f -
}

kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -

migrate_env="$tmp/migrate.lines"
printf 'MYSQL_ADMIN_URL=%s\nAMQP_ADMIN_URL=%s\nRABBITMQ_API_URL=%s\n' "$MYSQL_ADMIN_URL" "$AMQP_ADMIN_URL" "$RABBITMQ_API_URL" >"$migrate_env"
# The operators' roles (infra/access.ts OPERATORS): RabbitMQ users only; the trigger gets their URLs.
# The password of Secret sluice-migrate's key $1, kept, or a new one.
kept_password() {
  local password
  password=$(existing sluice-migrate "$1")
  printf '%s' "$password" | grep -Eq '^[A-Za-z0-9._~-]{12,128}$' || password=$(generate)
  printf '%s' "$password"
}
dlq_password=$(kept_password SLUICE_PASSWORD_DLQ)         # sluice_dlq, the dead-letter operator
monitor_password=$(kept_password SLUICE_PASSWORD_MONITOR) # sluice_monitor, the dashboard's queue figures
printf 'SLUICE_PASSWORD_DLQ=%s\nSLUICE_PASSWORD_MONITOR=%s\n' "$dlq_password" "$monitor_password" >>"$migrate_env"
for fn in $functions; do
  user=sluice_$(printf '%s' "$fn" | tr '-' '_')
  var=SLUICE_PASSWORD_$(printf '%s' "$fn" | tr 'a-z-' 'A-Z_')
  password=$(existing sluice-migrate "$var")
  printf '%s' "$password" | grep -Eq '^[A-Za-z0-9._~-]{12,128}$' || password=$(generate)
  printf '%s=%s\n' "$var" "$password" >>"$migrate_env"
  {
    printf 'AMQP_URL=%s\n' "$(with_user "$AMQP_ADMIN_URL" "$user" "$password")"
    printf 'MYSQL_URL=%s\n' "$(with_user "$MYSQL_ADMIN_URL" "$user" "$password")"
    if [ "$fn" = trigger ]; then
      token=${TRIGGER_TOKEN:-$(existing sluice-trigger TRIGGER_TOKEN)}
      [ -n "$token" ] || token=$(generate)
      printf 'TRIGGER_TOKEN=%s\n' "$token"
      printf 'DLQ_AMQP_URL=%s\n' "$(with_user "$AMQP_ADMIN_URL" sluice_dlq "$dlq_password")"
      printf 'RABBITMQ_MONITOR_URL=%s\n' "$(with_user "$RABBITMQ_API_URL" sluice_monitor "$monitor_password")"
    fi
  } | apply_secret "sluice-$fn"
done
apply_secret sluice-migrate <"$migrate_env"

# KEDA's rabbitmq scaler over http takes the vhost as the URL's last path segment (%2F for `/`).
amqp_rest=${AMQP_ADMIN_URL#*://}
amqp_path=${amqp_rest#"${amqp_rest%%[/?#]*}"}
amqp_path=${amqp_path%%[?#]*}
vhost=${amqp_path#/}
[ -n "$vhost" ] || vhost=%2F
monitor_api=$(with_user "$RABBITMQ_API_URL" sluice_monitor "$monitor_password")
monitor_api=${monitor_api%%[?#]*}
printf 'host=%s/%s\n' "${monitor_api%/}" "$vhost" | apply_secret sluice-keda

echo "create-secrets: the Secrets of namespace $ns are in place; now: kubectl apply -k infra/k8s" >&2
