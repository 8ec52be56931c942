#!/usr/bin/env bash
# Make sure the local services the tests and the demo need are up: start what is installed but
# stopped, enable the RabbitMQ management plugin, and say exactly what to do when we cannot.
# usage: ops/dev/services.sh [rabbitmq] [management] [postgres] [mariadb] [browser] [pdf] [promtool]   (default: all)
set -u
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(rabbitmq management postgres mariadb browser pdf promtool)

say() { printf 'services: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # port seconds
  local i
  for ((i = 0; i < $2 * 2; i++)); do port_open "$1" && return 0; sleep 0.5; done
  return 1
}
is_root() { [ "$(id -u)" = 0 ]; }
debian_like() { [ -r /etc/debian_version ]; }

apt_install() {  # package...
  if is_root && debian_like && command -v apt-get >/dev/null; then
    say "installing $* with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
  else
    return 1
  fi
}

rabbitmq() {
  port_open 5672 && return 0
  if ! command -v rabbitmq-server >/dev/null; then
    apt_install rabbitmq-server || { say "RabbitMQ is not installed. Run: sudo apt-get install rabbitmq-server"; return 1; }
  fi
  say "starting RabbitMQ"
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start rabbitmq-server 2>/dev/null || rabbitmq-server -detached
  else
    rabbitmq-server -detached >/dev/null 2>&1
  fi
  wait_port 5672 90 || { say "RabbitMQ did not come up on 127.0.0.1:5672 (see /var/log/rabbitmq/)"; return 1; }
}

management() {
  port_open 15672 && return 0
  say "enabling the RabbitMQ management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 ||
    { say "could not enable it. Run: sudo rabbitmq-plugins enable rabbitmq_management"; return 1; }
  wait_port 15672 60 || { say "the management API did not come up on 127.0.0.1:15672"; return 1; }
}

postgres() {
  port_open 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql || { say "PostgreSQL is not installed. Run: sudo apt-get install postgresql"; return 1; }
  fi
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start >/dev/null 2>&1
  wait_port 5432 60 || { say "PostgreSQL did not come up on 127.0.0.1:5432"; return 1; }
}

mariadb() {
  port_open 3306 && return 0
  if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    apt_install mariadb-server || { say "MariaDB is not installed. Run: sudo apt-get install mariadb-server"; return 1; }
  fi
  say "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1
  wait_port 3306 60 || { say "MariaDB did not come up on 127.0.0.1:3306"; return 1; }
}

browser() {  # Debian's chromium and a CJK font for the browser tests (Playwright never downloads a browser here)
  local ok=0
  [ -x /usr/bin/chromium ] || apt_install chromium ||
    { say "chromium is not installed (browser tests are skipped). Run: sudo apt-get install chromium"; ok=1; }
  if ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
    apt_install fonts-noto-cjk || { say "no CJK font: Chinese shows as boxes. Run: sudo apt-get install fonts-noto-cjk"; ok=1; }
  fi
  return $ok
}

pdf() {  # what WeasyPrint needs to lay out the compliance reports, and a font with Chinese characters
  local missing=() lib
  for lib in libpango-1.0.so.0:libpango-1.0-0 libpangoft2-1.0.so.0:libpangoft2-1.0-0 \
             libharfbuzz-subset.so.0:libharfbuzz-subset0 libfontconfig.so.1:libfontconfig1; do
    ldconfig -p 2>/dev/null | grep -q "${lib%%:*}" || missing+=("${lib##*:}")
  done
  command -v fc-list >/dev/null || missing+=(fontconfig)
  fc-list :lang=zh 2>/dev/null | grep -qi "noto" || missing+=(fonts-noto-cjk)
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}" ||
    { say "PDF reports need: sudo apt-get install ${missing[*]}"; return 1; }
}

promtool() {  # checks and unit-tests the Prometheus alert rules in ops/prometheus/ (Debian's prometheus package)
  type -P promtool >/dev/null && return 0  # the binary, not this function
  apt_install --no-install-recommends prometheus ||
    { say "promtool is missing (the alert-rule tests are skipped). Run: sudo apt-get install prometheus"; return 1; }
}

status=0
for s in "${want[@]}"; do "$s" || status=1; done
exit $status
