#!/usr/bin/env bash
# Creates the TLS material for a KvStore (or etcd) cluster with openssl:
#   a CA, per member a server certificate (client port 2379) and a peer certificate (peer port 2380),
#   and a client certificate for etcdctl / applications.
#
# usage: make-certs.sh [-o OUTDIR] [-d DAYS] [-c CLIENT_CN] [-k ec|rsa] MEMBER=ADDR[,ADDR...] ...
#   MEMBER   member name (etcd's --name), e.g. m0
#   ADDR     an IP address or a DNS name the member is reached by; each becomes a subjectAltName.
#            127.0.0.1, ::1 and localhost are added to every server certificate (local etcdctl, health checks).
#   -o       output directory (default ./pki); an existing ca.crt/ca.key there is reused, so members can
#            be added later with the same CA. Existing member or client files are never overwritten.
#   -d       validity in days (default 825; the CA gets 10 years)
#   -c       common name of the client certificate (default etcdctl; with auth enabled, etcd maps the CN
#            to a user name)
#   -k       key type: ec (P-256, default) or rsa (3072 bits)
#
# Output:
#   OUTDIR/ca.crt ca.key                  the CA (keep ca.key offline)
#   OUTDIR/<member>/server.crt server.key  --cert-file / --key-file            (serverAuth + clientAuth)
#   OUTDIR/<member>/peer.crt peer.key      --peer-cert-file / --peer-key-file  (serverAuth + clientAuth)
#   OUTDIR/client.crt client.key           etcdctl --cert / --key             (clientAuth)
# and --trusted-ca-file / --peer-trusted-ca-file / etcdctl --cacert = OUTDIR/ca.crt.
# The same material under the names of the common "etcd for Kubernetes" guides, for setups that expect them:
#   OUTDIR/ca.pem                          a copy of ca.crt
#   OUTDIR/kubernetes.pem kubernetes-key.pem  one certificate (CN=kubernetes, serverAuth + clientAuth) for every
#                                          member's client and peer port and the API server's etcd client: its
#                                          SANs are all members' names and addresses, localhost, 127.0.0.1, ::1 and
#                                          the kubernetes.default service names. Members added by a later run are
#                                          not in an existing kubernetes.pem: delete it to have it made again.
#
# Example: make-certs.sh -o /etc/kvstore/pki m0=10.0.0.10,kv0.example.com m1=10.0.0.11,kv1.example.com m2=10.0.0.12
set -euo pipefail

out=./pki days=825 client_cn=etcdctl keytype=ec
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts 'o:d:c:k:h' opt; do
  case $opt in
    o) out=$OPTARG ;; d) days=$OPTARG ;; c) client_cn=$OPTARG ;; k) keytype=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
case $keytype in ec|rsa) ;; *) echo "make-certs.sh: -k must be ec or rsa" >&2; exit 2 ;; esac
[[ $days =~ ^[0-9]+$ ]] || { echo "make-certs.sh: -d wants a number of days" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed (apt-get install -y openssl)" >&2; exit 1; }

newkey() { # FILE
  if [ "$keytype" = ec ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  else
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1" 2>/dev/null
  fi
  chmod 600 "$1"
}

sans() { # ADDR... -> subjectAltName value
  local a list=() seen=" "
  for a in "$@"; do
    [ -n "$a" ] || continue
    case "$seen" in *" $a "*) continue ;; esac
    seen+="$a "
    if [[ $a =~ ^[0-9]+(\.[0-9]+){3}$ || $a == *:* ]]; then list+=("IP:$a"); else list+=("DNS:$a"); fi
  done
  local IFS=,; echo "${list[*]}"
}

sign() { # CRT KEY CN EKU SAN
  local crt=$1 key=$2 cn=$3 eku=$4 san=$5
  if [ -e "$crt" ]; then echo "keeping existing $crt"; return; fi
  local ext; ext=$(mktemp); trap 'rm -f "$ext"' RETURN
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } > "$ext"
  newkey "$key"
  openssl req -new -key "$key" -subj "/O=kvstore/CN=$cn" -out "$crt.csr"
  openssl x509 -req -in "$crt.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$ext" -out "$crt" 2>/dev/null
  rm -f "$crt.csr"
  echo "wrote $crt (CN=$cn${san:+, $san})"
}

mkdir -p "$out"
umask 077
if [ -e "$out/ca.crt" ] && [ -e "$out/ca.key" ]; then
  echo "reusing CA $out/ca.crt"
else
  newkey "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/O=kvstore/CN=kvstore CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$out/ca.crt"
  echo "wrote $out/ca.crt"
fi

all_addrs=()
for spec in "$@"; do
  name=${spec%%=*}
  [[ $spec == *=* && -n $name && $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "make-certs.sh: bad member '$spec' (want NAME=ADDR[,ADDR...])" >&2; exit 2; }
  IFS=, read -r -a addrs <<< "${spec#*=}"
  [ ${#addrs[@]} -ge 1 ] || { echo "make-certs.sh: member $name has no address" >&2; exit 2; }
  all_addrs+=("${addrs[@]}" "$name")
  mkdir -p "$out/$name"
  sign "$out/$name/server.crt" "$out/$name/server.key" "$name" serverAuth,clientAuth "$(sans "${addrs[@]}" "$name" localhost 127.0.0.1 ::1)"
  sign "$out/$name/peer.crt" "$out/$name/peer.key" "$name" serverAuth,clientAuth "$(sans "${addrs[@]}" "$name")"
done
sign "$out/client.crt" "$out/client.key" "$client_cn" clientAuth ""
sign "$out/kubernetes.pem" "$out/kubernetes-key.pem" kubernetes serverAuth,clientAuth \
  "$(sans "${all_addrs[@]}" localhost 127.0.0.1 ::1 kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local)"
cp "$out/ca.crt" "$out/ca.pem"
chmod 644 "$out/ca.crt"
find "$out" \( -name "*.crt" -o -name "ca.pem" -o -name "kubernetes.pem" \) -exec chmod 644 {} +
find "$out" -type d -exec chmod 755 {} +
