#!/usr/bin/env bash
# Certificates for mutual TLS between the nodes of a mesh ([consensus.tls]: the peer port,
# which carries Raft and query fragments).
#
#   deploy/certs.sh DIR NAME=ADDR[,ADDR...] [NAME=ADDR...]
#
# Makes the mesh's CA in DIR (ca.pem, ca.key) unless it is there already, then for each NAME a
# key (NAME.key) and a certificate (NAME.pem) the CA signs, valid for the addresses other
# nodes dial it at: IP addresses and DNS names, comma-separated. Give each node its own
# NAME.pem, NAME.key and ca.pem; keep ca.key off the nodes. Needs openssl.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: deploy/certs.sh DIR NAME=ADDR[,ADDR...] ..." >&2; exit 1; }
command -v openssl >/dev/null || { echo "certs.sh: openssl is needed" >&2; exit 1; }
dir=$1; shift
mkdir -p "$dir"
cd "$dir"
umask 077
if [ ! -f ca.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 3650 -subj "/CN=flowmesh mesh CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
for spec in "$@"; do
    name=${spec%%=*}
    addrs=${spec#*=}
    [ -n "$name" ] && [ "$name" != "$spec" ] && [ -n "$addrs" ] ||
        { echo "certs.sh: $spec is not NAME=ADDR[,ADDR...]" >&2; exit 1; }
    san=""
    IFS=, read -ra list <<< "$addrs"
    for a in "${list[@]}"; do
        if [[ $a =~ ^[0-9.]+$ || $a == *:* ]]; then san+="IP:$a,"; else san+="DNS:$a,"; fi
    done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$name.pem" -days 825 -extfile <(printf '%s\n' \
            "subjectAltName=${san%,}" \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
    rm -f "$name.csr"
done
chmod 644 ./*.pem
