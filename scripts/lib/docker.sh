# shellcheck shell=bash source-path=SCRIPTDIR
# Docker engine, swarm and local base image for Deployer's scripts. Sourced, not executed.
#
#   ensure_docker       a Docker engine answers `docker info` (installs Debian's docker.io and
#                       starts dockerd by hand when needed: these machines have no systemd)
#   stop_docker         stops the dockerd that ensure_docker started (by its pid), nothing else
#   ensure_swarm        this engine is a (single-node) swarm manager
#   ensure_base_image   deployer/base:bookworm exists, made with debootstrap when no registry is reachable
#
# Every function is idempotent and safe to call from several scripts in a row.

# shellcheck source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

DEPLOYER_DOCKERD_LOG="${DEPLOYER_DOCKERD_LOG:-/var/log/deployer-dockerd.log}"
DEPLOYER_DOCKERD_PIDFILE="${DEPLOYER_DOCKERD_PIDFILE:-/run/deployer-dockerd.pid}"
DEPLOYER_DOCKERD_TIMEOUT="${DEPLOYER_DOCKERD_TIMEOUT:-60}"
DEPLOYER_BASE_IMAGE="${DEPLOYER_BASE_IMAGE:-deployer/base:bookworm}"
DEPLOYER_DEBIAN_MIRROR="${DEPLOYER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

die() { printf 'error: %s\n' "$*" >&2; return 1; }

# The pid in our pid file, if that process is alive and is a dockerd; else nothing (and status 1).
_our_dockerd_pid() {
    local pid
    [ -s "$DEPLOYER_DOCKERD_PIDFILE" ] || return 1
    pid=$(cat "$DEPLOYER_DOCKERD_PIDFILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || return 1
    echo "$pid"
}

_docker_answers() { docker info >/dev/null 2>&1; }

ensure_docker() {
    _docker_answers && return 0

    if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != unix:///var/run/docker.sock ]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local engine in its place"
        return 1
    fi

    if ! command -v dockerd >/dev/null 2>&1; then
        say "installing Debian's docker.io (Docker engine)"
        ensure_apt docker.io iptables ca-certificates || return 1
    fi

    local pid waited=0
    if pid=$(_our_dockerd_pid); then
        say "waiting for the Docker engine we started earlier (pid $pid)"
    else
        # Some other engine may be running (not ours, or ours from a pid file that was lost):
        # never start a second one over it, and never kill it.
        local other
        other=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [[ "$other" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$other/comm" 2>/dev/null)" = dockerd ]; then
            die "a dockerd (pid $other) runs but 'docker info' fails; not starting another one:
$(docker info 2>&1 | tail -n 5)"
            return 1
        fi
        rm -f "$DEPLOYER_DOCKERD_PIDFILE"
        mkdir -p "$(dirname "$DEPLOYER_DOCKERD_LOG")" "$(dirname "$DEPLOYER_DOCKERD_PIDFILE")"
        say "starting dockerd (log: $DEPLOYER_DOCKERD_LOG)"
        printf '\n==== %s: dockerd started by Deployer\n' "$(date -Is)" >>"$DEPLOYER_DOCKERD_LOG"
        # setsid: its own session, so that neither a hang-up nor a signal to this script's process
        # group stops it; -w keeps $! alive exactly as long as dockerd, also when setsid has to fork.
        # dockerd itself writes the pid file (and removes it on a clean exit).
        setsid -w dockerd --host unix:///var/run/docker.sock --pidfile "$DEPLOYER_DOCKERD_PIDFILE" \
            </dev/null >>"$DEPLOYER_DOCKERD_LOG" 2>&1 &
        pid=$!
    fi

    while ! _docker_answers; do
        if [ "$waited" -ge "$DEPLOYER_DOCKERD_TIMEOUT" ]; then
            die "the Docker engine did not answer within ${DEPLOYER_DOCKERD_TIMEOUT}s; last lines of $DEPLOYER_DOCKERD_LOG:
$(tail -n 25 "$DEPLOYER_DOCKERD_LOG" 2>/dev/null)"
            return 1
        fi
        if ! kill -0 "$pid" 2>/dev/null && ! _our_dockerd_pid >/dev/null; then
            die "dockerd exited while starting; last lines of $DEPLOYER_DOCKERD_LOG:
$(tail -n 25 "$DEPLOYER_DOCKERD_LOG" 2>/dev/null)"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "the Docker engine answers (pid $(_our_dockerd_pid || echo "$pid"), ${waited}s)"
}

# Stops only the dockerd that ensure_docker started, by the pid in our pid file.
stop_docker() {
    local pid _
    if ! pid=$(_our_dockerd_pid); then
        say "no Docker engine started by Deployer is running"
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$DEPLOYER_DOCKERD_PIDFILE"; return 0; }
        sleep 1
    done
    die "dockerd (pid $pid) did not stop within 60s"
}

ensure_swarm() {
    ensure_docker || return 1
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null)
    case "$state" in
        "active true") return 0 ;;
        "active false")
            die "this engine is a swarm worker, not a manager; leave that swarm first (docker swarm leave)"
            return 1 ;;
    esac
    say "initialising a single-node swarm"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || { die "docker swarm init failed"; return 1; }
}

# --- the local base image -------------------------------------------------------------------

DEPLOYER_BASE_SUITE=bookworm
DEPLOYER_BASE_INCLUDE=python3,python3-venv,python3-pip,ca-certificates
# `docker import` records no environment; Dockerfiles that extend PATH need it set.
DEPLOYER_BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Everything that decides the base image's content; its hash is the image's cache key.
_base_recipe() {
    cat <<EOF
debootstrap --variant=minbase --include=$DEPLOYER_BASE_INCLUDE $DEPLOYER_BASE_SUITE $DEPLOYER_DEBIAN_MIRROR
sources: $DEPLOYER_BASE_SUITE $DEPLOYER_BASE_SUITE-updates $DEPLOYER_BASE_SUITE-security (main)
cleanup: apt lists, apt archives, logs; ENV PATH=$DEPLOYER_BASE_PATH LANG=C.UTF-8; CMD bash
recipe-version: 1
EOF
}

ensure_base_image() {
    ensure_docker || return 1
    local hash have dir rc=0
    hash=$(_base_recipe | sha256sum | cut -c1-16)
    have=$(docker image inspect --format '{{ index .Config.Labels "org.deployer.recipe-hash" }}' \
        "$DEPLOYER_BASE_IMAGE" 2>/dev/null || true)
    if [ "$have" = "$hash" ]; then
        say "base image $DEPLOYER_BASE_IMAGE is up to date (recipe $hash)"
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        ensure_apt debootstrap || return 1
    fi
    # A real disk (not a tmpfs /tmp): debootstrap needs device nodes and exec.
    dir=$(mktemp -d /var/tmp/deployer-base.XXXXXX) || return 1
    say "building $DEPLOYER_BASE_IMAGE with debootstrap (recipe $hash; about a minute)"
    if ! debootstrap --variant=minbase --include="$DEPLOYER_BASE_INCLUDE" \
            "$DEPLOYER_BASE_SUITE" "$dir" "$DEPLOYER_DEBIAN_MIRROR" >"$dir.log" 2>&1; then
        tail -n 25 "$dir.log" >&2
        [ -f "$dir/debootstrap/debootstrap.log" ] && tail -n 25 "$dir/debootstrap/debootstrap.log" >&2
        rm -rf "$dir" "$dir.log"
        die "debootstrap failed"
        return 1
    fi
    local mirror_host=${DEPLOYER_DEBIAN_MIRROR%/debian}
    cat >"$dir/etc/apt/sources.list" <<EOF
deb $DEPLOYER_DEBIAN_MIRROR $DEPLOYER_BASE_SUITE main
deb $DEPLOYER_DEBIAN_MIRROR $DEPLOYER_BASE_SUITE-updates main
deb $mirror_host/debian-security $DEPLOYER_BASE_SUITE-security main
EOF
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
        "$dir"/var/log/* "$dir/etc/hostname" "$dir/etc/resolv.conf"
    : >"$dir/etc/resolv.conf"
    tar --numeric-owner -C "$dir" -c . | docker import \
        --change "LABEL org.deployer.recipe-hash=$hash" \
        --change "ENV PATH=$DEPLOYER_BASE_PATH" \
        --change "ENV LANG=C.UTF-8" \
        --change 'CMD ["bash"]' \
        - "$DEPLOYER_BASE_IMAGE" >/dev/null || rc=$?
    rm -rf "$dir" "$dir.log"
    [ "$rc" -eq 0 ] || { die "docker import of the base image failed"; return 1; }
    say "built $DEPLOYER_BASE_IMAGE ($(docker image inspect --format '{{.Size}}' "$DEPLOYER_BASE_IMAGE" | numfmt --to=iec))"
}
