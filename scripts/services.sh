#!/usr/bin/env bash
# Makes sure RabbitMQ (with its management API) and MariaDB are running and the
# administrator the migrate step uses exists. Idempotent: a service that already
# answers is left alone. The functions' own users are made by `npm run migrate`.
#   scripts/services.sh            start what is installed, say exactly what is missing
#   scripts/services.sh --install  also install missing services from Debian's packages (needs root)
# The ports and credentials follow AMQP_ADMIN_URL and MYSQL_ADMIN_URL when they are set.
set -euo pipefail

install=no
[ "${1:-}" = "--install" ] && install=yes

amqp_url=${AMQP_ADMIN_URL:-amqp://guest:guest@127.0.0.1:5672}
mysql_url=${MYSQL_ADMIN_URL:-mysql://sluice:sluice@127.0.0.1:3306/sluice}
# mysql://user:pass@host:port/db
re='^mysql://([^:]+):([^@]*)@([^:/]+):?([0-9]*)/(.+)$'
[[ $mysql_url =~ $re ]] || { echo "services: MYSQL_ADMIN_URL must look like mysql://user:pass@host:port/db (got ${mysql_url%%://*}://…)" >&2; exit 1; }
db_user=${BASH_REMATCH[1]} db_pass=${BASH_REMATCH[2]} db_host=${BASH_REMATCH[3]} db_port=${BASH_REMATCH[4]:-3306} db_name=${BASH_REMATCH[5]}
re='^amqps?://[^@]*@?([^:/]+):?([0-9]*)'
[[ $amqp_url =~ $re ]] || { echo "services: cannot read host and port from AMQP_ADMIN_URL" >&2; exit 1; }
mq_host=${BASH_REMATCH[1]} mq_port=${BASH_REMATCH[2]:-5672}

# InnoDB's memory for the local MariaDB. Debian's defaults (a 128 MiB buffer pool, a 96 MiB redo
# log) are sized for a laptop: the aggregates' tables are keyed on hashes (random inserts), and
# once their indexes outgrow the pool every batch reads its pages back from disk. 1.5 million
# generated lines replay 2.25x faster with these (docs/benchmarks.md). Raised on a running local
# server too (both are dynamic in MariaDB 10.11), never lowered.
db_buffer_pool=${MYSQL_BUFFER_POOL_BYTES:-2147483648}
db_redo_log=${MYSQL_REDO_LOG_BYTES:-536870912}
for v in "$db_buffer_pool" "$db_redo_log"; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "services: MYSQL_BUFFER_POOL_BYTES and MYSQL_REDO_LOG_BYTES are byte counts (got '$v')" >&2; exit 1; }
done

say() { echo "services: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
is_local() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }
wait_for() { # name host port seconds
  for _ in $(seq 1 "$4"); do listening "$2" "$3" && return 0; sleep 1; done
  say "$1 did not accept connections on $2:$3 within $4 s"; return 1
}

# apt-get with its progress: on one line that moves (a terminal) or every 10 % (a log), since a
# first install of RabbitMQ or MariaDB takes minutes. apt's own messages are shown if it fails.
apt_run() { # label apt-get-arguments...
  local label=$1 err rc=1 last=-10 phase='' line kind pct desc
  shift
  err=$(mktemp)
  # Status-Fd: apt's machine-readable progress. Lock::Timeout: another apt (an unattended upgrade,
  # a second install) may hold the lock for a while; wait for it instead of failing.
  while IFS= read -r line; do
    case $line in
      exit:*) rc=${line#exit:} ;;
      pmstatus:* | dlstatus:*)
        IFS=: read -r kind _ pct desc <<<"$line"
        pct=${pct%%.*}
        if [ "$kind" != "$phase" ]; then phase=$kind; last=-10; fi
        if [ -t 2 ]; then
          printf '\rservices: %s %3d%% %-60.60s' "$label" "$pct" "$desc" >&2
        elif [ "$pct" -ge $((last + 10)) ]; then
          say "$label $pct% $desc"; last=$pct
        fi ;;
    esac
  done < <({ DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -o APT::Status-Fd=3 "$@" 3>&1 >/dev/null 2>"$err"; echo "exit:$?"; })
  if [ -t 2 ]; then printf '\n' >&2; fi
  if [ "$rc" != 0 ]; then cat "$err" >&2; fi
  rm -f "$err"
  return "$rc"
}

apt_updated=no
ensure_package() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$install" = yes ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $2 from Debian's packages"
    if [ "$apt_updated" = no ]; then apt_run "updating the package lists" update; apt_updated=yes; fi
    # The packages' own init scripts cannot start services in a container; we start them below.
    apt_run "installing $2" install -y "$2"
  else
    say "$2 is not installed: run 'sudo apt-get install -y $2' (or 'bash scripts/services.sh --install' as root)"
    return 1
  fi
}

missing=0

# --- RabbitMQ -----------------------------------------------------------------
if listening "$mq_host" "$mq_port"; then
  say "RabbitMQ already answers on $mq_host:$mq_port"
elif ! is_local "$mq_host"; then
  say "RabbitMQ at $mq_host:$mq_port does not answer, and it is not a local address I can start"; missing=1
elif ensure_package rabbitmq-server rabbitmq-server; then
  say "starting RabbitMQ"
  # The consistent-hash exchange partitions EV readings by session (see infra/topology.ts).
  rabbitmq-plugins --offline enable rabbitmq_consistent_hash_exchange rabbitmq_management >/dev/null
  rabbitmq-server -detached
  wait_for RabbitMQ "$mq_host" "$mq_port" 90 || missing=1
else
  missing=1
fi
if [ $missing = 0 ] && is_local "$mq_host" && command -v rabbitmqctl >/dev/null; then
  # Plugins enabled on a running node take effect at once; a no-op when already on.
  # The management API is how the migrate step creates the functions' users.
  rabbitmq-plugins enable rabbitmq_consistent_hash_exchange rabbitmq_management >/dev/null 2>&1 || true
  rabbitmqctl await_startup >/dev/null 2>&1 || true
  wait_for "RabbitMQ's management API" "$mq_host" 15672 60 || missing=1
  # The integration tests get a virtual host of their own, away from a running `npm start`.
  if ! rabbitmqctl list_vhosts 2>/dev/null | grep -qx sluice-test; then
    rabbitmqctl add_vhost sluice-test >/dev/null && rabbitmqctl set_permissions -p sluice-test guest '.*' '.*' '.*' >/dev/null \
      || say "could not create RabbitMQ vhost sluice-test for the tests"
  fi
fi

# --- MariaDB / MySQL ------------------------------------------------------------
if listening "$db_host" "$db_port"; then
  say "MySQL already answers on $db_host:$db_port"
elif ! is_local "$db_host"; then
  say "MySQL at $db_host:$db_port does not answer, and it is not a local address I can start"; missing=1
elif ensure_package mariadbd mariadb-server; then
  say "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  (setsid mariadbd --user=mysql --port="$db_port" --innodb-buffer-pool-size="$db_buffer_pool" --innodb-log-file-size="$db_redo_log" \
    >/var/log/sluice-mariadb.log 2>&1 &)
  wait_for MariaDB "$db_host" "$db_port" 60 || missing=1
else
  missing=1
fi
if [ $missing = 0 ] && is_local "$db_host" && command -v mariadb >/dev/null && [ "$(id -u)" = 0 ]; then
  # Root uses socket authentication. The administrator of the application's databases
  # (the migrate step's MYSQL_ADMIN_URL) may create the functions' users and grant them
  # rights on those databases; the functions themselves never connect as it.
  mariadb -e "CREATE DATABASE IF NOT EXISTS \`$db_name\`;
    CREATE USER IF NOT EXISTS '$db_user'@'localhost' IDENTIFIED BY '$db_pass';
    CREATE USER IF NOT EXISTS '$db_user'@'127.0.0.1' IDENTIFIED BY '$db_pass';
    GRANT ALL ON \`$db_name\`.* TO '$db_user'@'localhost' WITH GRANT OPTION;
    GRANT ALL ON \`$db_name\`.* TO '$db_user'@'127.0.0.1' WITH GRANT OPTION;
    GRANT ALL ON \`${db_name}_test%\`.* TO '$db_user'@'localhost' WITH GRANT OPTION;
    GRANT ALL ON \`${db_name}_test%\`.* TO '$db_user'@'127.0.0.1' WITH GRANT OPTION;
    GRANT CREATE USER ON *.* TO '$db_user'@'localhost';
    GRANT CREATE USER ON *.* TO '$db_user'@'127.0.0.1';" \
    || { say "could not create database $db_name and user $db_user"; missing=1; }
  # A server started before (by an earlier run, or by hand) gets the same memory, when it has less.
  mariadb -e "SET GLOBAL innodb_buffer_pool_size = GREATEST(@@innodb_buffer_pool_size, $db_buffer_pool);
    SET GLOBAL innodb_log_file_size = GREATEST(@@innodb_log_file_size, $db_redo_log);" \
    || say "could not raise InnoDB's buffer pool and redo log (the database works, slower on big logs)"
fi

if [ $missing != 0 ]; then say "some services are missing (see above)"; exit 1; fi
say "RabbitMQ $mq_host:$mq_port and MySQL $db_host:$db_port are ready"
