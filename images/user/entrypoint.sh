#!/bin/bash
# Entrypoint of Deployer's notebook image. Makes the container work for whatever uid:gid it runs
# as (the spawner uses the user's TAS uid/gid), without root and without a writable /etc/passwd:
#   - HOME is /home/jupyter (world-writable, sticky) or, if that is not writable, a private
#     directory under /tmp;
#   - a uid the image does not know gets a passwd entry "jupyter" (and its gid a group) through
#     nss_wrapper, so `whoami`, `~`, getpwuid() and the shell prompt work;
#   - the shell skeleton (.bashrc, .profile) is copied into HOME when missing.
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

exec "$@"
