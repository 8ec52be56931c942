#!/usr/bin/env bash
# Make a development certificate authority and the TLS certificates a Credit Exchange broker,
# hub and department nodes need to talk amqps:// with client certificates (EXTERNAL login).
# For development and tests only: a production CA lives offline, not in a shell script.
#
# usage: certs/make-dev-ca.sh [--out DIR] [--server-name NAME]... [--user-prefix PREFIX]
#                             [--hub] [--days N] [--force] [DEPT]...
#
#   --out DIR            where to write (default certs/dev next to this script)
#   --server-name NAME   a DNS name of the broker; repeat for a cluster (rabbit1, rabbit2, …).
#                        The first is the server certificate's CN. localhost and 127.0.0.1 are
#                        always in its subjectAltName. Default: localhost
#   --user-prefix P      the hub's [broker] user_prefix (default cx-)
#   --hub                also issue the hub's client certificate (CN <prefix>hub)
#   --days N             validity of server and client certificates (default 365)
#   --force              issue server and client certificates again even if valid ones exist
#
# Writes into DIR (private keys mode 0600, certificates 0644):
#   ca.pem, ca-key.pem                 the CA; reused when present, so running again is safe
#   server.pem, server-key.pem         the broker's certificate (serverAuth)
#   DEPT.pem, DEPT-key.pem             a department's client certificate, CN <prefix>dept-DEPT,
#                                      which is the broker user the hub provisions for DEPT
#                                      (Topology.dept_user), so RabbitMQ's EXTERNAL mechanism with
#                                      ssl_cert_login_from = common_name logs the node in as that user
#   hub.pem, hub-key.pem               with --hub: the hub's client certificate, CN <prefix>hub
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/dev"
prefix="cx-"
days=365
force=0
hub=0
server_names=()
depts=()

die() { printf 'make-dev-ca: %s\n' "$*" >&2; exit 2; }
say() { printf 'make-dev-ca: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --server-name) server_names+=("${2:?--server-name needs a name}"); shift 2 ;;
    --server-name=*) server_names+=("${1#*=}"); shift ;;
    --user-prefix) prefix="${2?--user-prefix needs a value}"; shift 2 ;;
    --user-prefix=*) prefix="${1#*=}"; shift ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --days=*) days="${1#*=}"; shift ;;
    --hub) hub=1; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; depts+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) depts+=("$1"); shift ;;
  esac
done
[ ${#server_names[@]} -eq 0 ] && server_names=(localhost)
[[ "$days" =~ ^[0-9]+$ ]] || die "--days must be a whole number of days"
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"
for dept in ${depts[@]+"${depts[@]}"}; do
  # the same rule as cx.protocol.envelope.DEPT_ID; ca/server/hub would collide with the files above
  [[ "$dept" =~ ^[a-z][a-z0-9_-]{0,31}$ ]] || die "$dept is not a department id (a-z first, then a-z 0-9 _ -, at most 32)"
  case "$dept" in ca|server|hub) die "department id $dept would overwrite $dept.pem; choose another" ;; esac
done

mkdir -p "$out"
cd "$out"
umask 077  # every file starts private; certificates are opened up to 0644 below
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

new_key() {  # file: an EC P-256 key, which Erlang's ssl, OpenSSL and Python all accept
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

# -- the CA: reused when present ---------------------------------------------------------------
if [ -s ca.pem ] && [ -s ca-key.pem ]; then
  say "reusing the CA in $out/ca.pem"
else
  new_key ca-key.pem
  openssl req -new -x509 -key ca-key.pem -out ca.pem -days 3650 -sha256 -set_serial "$(serial)" \
    -subj "/O=Credit Exchange development/CN=Credit Exchange development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  chmod 644 ca.pem
  say "created the CA $out/ca.pem"
fi

valid() {  # cert: signed by this CA and not expiring within a day
  [ -s "$1" ] && [ -s "${1%.pem}-key.pem" ] &&
    openssl verify -CAfile ca.pem "$1" >/dev/null 2>&1 &&
    openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

cn_of() { openssl x509 -in "$1" -noout -subject -nameopt multiline 2>/dev/null | sed -n 's/^ *commonName *= *//p'; }

issue() {  # name cn extensions-file
  local name="$1" cn="$2" ext="$3"
  new_key "$name-key.pem"
  openssl req -new -key "$name-key.pem" -out "$tmp/$name.csr" -subj "/O=Credit Exchange development/CN=$cn"
  openssl x509 -req -in "$tmp/$name.csr" -CA ca.pem -CAkey ca-key.pem -set_serial "$(serial)" -days "$days" \
    -sha256 -extfile "$ext" -out "$name.pem" 2>/dev/null
  chmod 644 "$name.pem"
  say "issued $out/$name.pem (CN $cn)"
}

# -- the broker's server certificate ---------------------------------------------------------------
san="DNS:localhost,IP:127.0.0.1"
for n in "${server_names[@]}"; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then entry="IP:$n"; else entry="DNS:$n"; fi
  [[ ",$san," == *",$entry,"* ]] || san="$san,$entry"
done
server_ok=0
if [ "$force" = 0 ] && valid server.pem; then
  server_ok=1
  for n in "${server_names[@]}"; do
    if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then check=(-checkip "$n"); else check=(-checkhost "$n"); fi
    openssl x509 -in server.pem -noout "${check[@]}" | grep -q ' does match ' || server_ok=0
  done
fi
if [ "$server_ok" = 1 ]; then
  say "keeping $out/server.pem"
else
  cat >"$tmp/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  issue server "${server_names[0]}" "$tmp/server.ext"
fi

# -- client certificates: CN = the broker user name ------------------------------------------------
cat >"$tmp/client.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
client() {  # file-name broker-user
  if [ "$force" = 0 ] && valid "$1.pem" && [ "$(cn_of "$1.pem")" = "$2" ]; then
    say "keeping $out/$1.pem (CN $2)"
  else
    issue "$1" "$2" "$tmp/client.ext"
  fi
}
[ "$hub" = 1 ] && client hub "${prefix}hub"
for dept in ${depts[@]+"${depts[@]}"}; do
  client "$dept" "${prefix}dept-$dept"
done
exit 0
