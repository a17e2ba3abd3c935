#!/usr/bin/env bash
# Installs what the test suite drives, then nothing else: the SIP peers (sipp from Debian's
# sip-tester, baresip), the DNS tools and server (kdig, knot), headless Chromium with ChromeDriver
# and a font, dpkg-dev (dpkg-shlibdeps for the package test), spandsp (tones, DTMF and caller ID
# for the line simulators), socat, and the cargo tools the suite runs (cargo-deb, cargo-fuzz).
#
# README's test command is `bash tests/setup.sh && cargo test --release`; .ci/run runs exactly that.
# Without root, it lists what is missing and the command that installs it, and fails.
set -euo pipefail

need_pkg=()
have() { command -v "$1" >/dev/null 2>&1; }
have sipp || need_pkg+=(sip-tester)
have baresip || need_pkg+=(baresip)
have kdig || need_pkg+=(knot-dnsutils)
have knotd || need_pkg+=(knot)
have chromium || need_pkg+=(chromium)
have chromedriver || need_pkg+=(chromium-driver)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkg+=(fonts-dejavu-core)
have dpkg-shlibdeps || need_pkg+=(dpkg-dev)
have socat || need_pkg+=(socat)
dpkg -s libspandsp-dev >/dev/null 2>&1 || need_pkg+=(libspandsp-dev)
have pkg-config || need_pkg+=(pkg-config)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_pkg+=(python3-venv)

if [ "${#need_pkg[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "tests/setup.sh: installing ${need_pkg[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need_pkg[@]}" >/dev/null
    elif have sudo && sudo -n true 2>/dev/null; then
        echo "tests/setup.sh: installing ${need_pkg[*]} (sudo)" >&2
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkg[@]}" >/dev/null
    else
        echo "tests/setup.sh: missing Debian packages: ${need_pkg[*]}" >&2
        echo "install them with: sudo apt-get install ${need_pkg[*]}" >&2
        exit 1
    fi
fi

# The independent SMS PDU encoder and decoder the SMS tests check pasarela against (PyPI
# python-gsmmodem-new, module gsmmodem.pdu), and the SMTP server that receives the forwarded
# SMS (PyPI aiosmtpd), in a virtual environment under target/.
venv="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/pyenv"
if ! "$venv/bin/python" -c 'import gsmmodem.pdu' >/dev/null 2>&1; then
    echo "tests/setup.sh: installing python-gsmmodem-new in $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet python-gsmmodem-new
fi
if ! "$venv/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "tests/setup.sh: installing aiosmtpd in $venv" >&2
    "$venv/bin/python" -m pip install --quiet aiosmtpd
fi

if ! cargo deb --version >/dev/null 2>&1; then
    echo "tests/setup.sh: installing cargo-deb" >&2
    cargo install cargo-deb --locked --quiet
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/setup.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
