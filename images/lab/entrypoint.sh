#!/bin/bash
# Entry point of a lab host: sshd (root by key only), then dockerd in the foreground.
# Extra arguments are passed on to dockerd.
set -euo pipefail

mkdir -p /run/sshd /root/.ssh
chmod 0700 /root/.ssh
ssh-keygen -A >/dev/null

keys=/root/.ssh/authorized_keys
: >"$keys"
if [ -n "${LAB_AUTHORIZED_KEY:-}" ]; then
    printf '%s\n' "$LAB_AUTHORIZED_KEY" >>"$keys"
fi
if [ -r /etc/lab/authorized_keys ]; then
    cat /etc/lab/authorized_keys >>"$keys"
fi
chmod 0600 "$keys"
if ! grep -q . "$keys"; then
    echo "lab-entrypoint: no authorized key (set LAB_AUTHORIZED_KEY or mount /etc/lab/authorized_keys)" >&2
    exit 1
fi

/usr/sbin/sshd -e
echo "lab-entrypoint: sshd started on $(hostname)" >&2

# Each inner engine needs its own cgroup parent, else the engines collide in the cgroup tree they
# share with the outer one (--cgroupns=host). LAB_CGROUP_PARENT overrides the default, so that two
# labs with the same host names can run side by side.
exec dockerd --host unix:///var/run/docker.sock --cgroup-parent="${LAB_CGROUP_PARENT:-/dind-$(hostname)}" "$@"
