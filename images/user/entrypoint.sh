#!/bin/bash
# Entrypoint of Deployer's notebook image. Makes the container work for whatever uid:gid it runs
# as (the spawner uses the user's TAS uid/gid), without root and without a writable /etc/passwd:
#   - HOME is /home/jupyter (world-writable, sticky) or, if that is not writable, a private
#     directory under /tmp;
#   - a uid the image does not know gets a passwd entry "jupyter" (and its gid a group) through
#     nss_wrapper, so `whoami`, `~`, getpwuid() and the shell prompt work;
#   - the shell skeleton (.bashrc, .profile) is copied into HOME when missing;
#   - with a tenant CA (DEPLOYER_TENANT_CA, a file the spawner mounts from a Docker config), the
#     system CAs and the tenant's are joined into one bundle (DEPLOYER_CA_BUNDLE, by default
#     /etc/deployer/ca-bundle.pem, which is also certifi's bundle: see the Dockerfile), and
#     REQUESTS_CA_BUNDLE, SSL_CERT_FILE and CURL_CA_BUNDLE point at it for the server, its kernels
#     and its terminals (requests, agavepy, tapipy, Python's ssl, httpx, aiohttp, pip, curl).
#   - secret values for the environment (notebook_secret_env: license keys) arrive as Docker secrets
#     /run/secrets/deployer-env-<NAME>, readable by this uid only, and are exported here, so they
#     never stand in the service's or container's environment that `docker inspect` shows.
# Files the process creates (also in bind mounts such as ~/permanent) belong to that uid:gid.
set -euo pipefail

uid=$(id -u)
gid=$(id -g)

if [ -z "${HOME:-}" ] || [ "$HOME" = / ]; then
    HOME=/home/jupyter
fi
if [ ! -w "$HOME" ]; then
    echo "deployer-entrypoint: $HOME is not writable for uid $uid; using a private home in /tmp" >&2
    HOME=$(mktemp -d "/tmp/home-$uid.XXXXXX")
fi
export HOME
# Where `pip install` puts scripts when it falls back to the user site (~/.local).
case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) export PATH="$HOME/.local/bin:$PATH" ;; esac

if ! getent passwd "$uid" >/dev/null 2>&1; then
    nss_dir=$(mktemp -d "/tmp/nss-$uid.XXXXXX")
    grep -v '^jupyter:' /etc/passwd >"$nss_dir/passwd"
    echo "jupyter:x:$uid:$gid:Jupyter user:$HOME:/bin/bash" >>"$nss_dir/passwd"
    cp /etc/group "$nss_dir/group"
    if ! getent group "$gid" >/dev/null 2>&1; then
        echo "jupyter:x:$gid:" >>"$nss_dir/group"
    fi
    export NSS_WRAPPER_PASSWD="$nss_dir/passwd" NSS_WRAPPER_GROUP="$nss_dir/group"
    export LD_PRELOAD="libnss_wrapper.so${LD_PRELOAD:+ $LD_PRELOAD}"
fi
USER=$(id -un 2>/dev/null || echo jupyter)
export USER LOGNAME="$USER"

for f in /etc/skel/.[!.]*; do
    if [ -e "$f" ] && [ ! -e "$HOME/${f##*/}" ]; then
        cp "$f" "$HOME/" 2>/dev/null || true
    fi
done

if [ -d /home/jupyter/permanent ] && [ ! -w /home/jupyter/permanent ]; then
    echo "deployer-entrypoint: /home/jupyter/permanent is not writable for uid $uid:$gid" \
         "(no persistent storage mounted?)" >&2
fi

tenant_ca_bundle() {
    local tenant_ca=$1 bundle=$2 system_ca=/etc/ssl/certs/ca-certificates.crt tmp
    if [ ! -r "$tenant_ca" ] || ! grep -q -- '-----BEGIN CERTIFICATE-----' "$tenant_ca"; then
        echo "deployer-entrypoint: $tenant_ca is missing or holds no certificate; the tenant's CA is not trusted" >&2
        return 1
    fi
    if ! tmp=$(mktemp "$(dirname "$bundle")/.ca-bundle.XXXXXX" 2>/dev/null); then
        echo "deployer-entrypoint: cannot write $bundle as uid $uid; the tenant's CA is not trusted" >&2
        return 1
    fi
    # Written afresh at every start (the tenant CA may have changed), replaced atomically.
    { if [ -r "$system_ca" ]; then cat "$system_ca"; echo; fi; cat "$tenant_ca"; } >"$tmp" &&
        chmod 0444 "$tmp" && mv -f "$tmp" "$bundle" || { rm -f "$tmp"; return 1; }
}
if [ -n "${DEPLOYER_TENANT_CA:-}" ]; then
    bundle=${DEPLOYER_CA_BUNDLE:-/etc/deployer/ca-bundle.pem}
    if tenant_ca_bundle "$DEPLOYER_TENANT_CA" "$bundle"; then
        export REQUESTS_CA_BUNDLE="$bundle" SSL_CERT_FILE="$bundle" CURL_CA_BUNDLE="$bundle"
        # Node adds these to its own CAs (the system ones are not in its store).
        export NODE_EXTRA_CA_CERTS="$DEPLOYER_TENANT_CA"
    fi
fi

for f in /run/secrets/deployer-env-*; do
    [ -f "$f" ] || continue
    name=${f#/run/secrets/deployer-env-}
    if [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && [ -r "$f" ]; then
        export "$name=$(cat "$f")"
    else
        echo "deployer-entrypoint: cannot read the secret for $name as uid $uid; it is not set" >&2
    fi
done

exec "$@"
