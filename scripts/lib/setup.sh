# Shared setup for scripts/up and scripts/test: idempotent, safe to re-run on a fresh machine.
# Sourced, not executed. Everything is installed from the package registries this machine reaches.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The project's virtual environment with the CLI, the hub plugins and the test tools.
ensure_venv() {
    if [ ! -x "$PY" ]; then
        say "creating the virtual environment in $VENV"
        python3 -m venv "$VENV"
    fi
    # Reinstall only when a project file changed since the last install.
    local stamp="$VENV/.deployer-installed" digest
    digest=$(cat "$ROOT/pyproject.toml" "$ROOT/hub/pyproject.toml" | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        say "installing Deployer and its test tools"
        "$PY" -m pip install --quiet -e "$ROOT/hub" -e "$ROOT[test]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
        "$PY" -c "import deployer, deployer_hub" || { echo "installation failed" >&2; return 1; }
        echo "$digest" >"$stamp"
    fi
}

# Debian packages, installed only when missing (a fresh machine of this kind has none of them).
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || { echo "installing ${missing[*]} needs root" >&2; return 1; }
    apt-get update -qq >&2 || { echo "apt-get update failed" >&2; return 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || { echo "apt-get install ${missing[*]} failed" >&2; return 1; }
}

# Node.js (the OIDC test provider) and configurable-http-proxy, the proxy JupyterHub starts.
ensure_proxy() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        ensure_apt nodejs npm
    fi
    if ! command -v configurable-http-proxy >/dev/null; then
        say "installing configurable-http-proxy from npm"
        npm install -g --silent configurable-http-proxy@5 >/dev/null
    fi
}
