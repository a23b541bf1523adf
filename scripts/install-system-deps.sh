#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when they are missing.
set -euo pipefail

need=()
# The tests' IMAP server: Dovecot's core (dovecot, doveadm) and its IMAP processes.
{ command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; } && command -v doveadm >/dev/null 2>&1 \
  || need+=(dovecot-core)
[ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/imap-login ] || need+=(dovecot-imapd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The browser tests: Debian's chromium (Playwright drives /usr/bin/chromium) and a font to render pages with.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need these Debian packages: ${need[*]}" >&2
  echo "Install them as root:  sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the package from starting a system-wide Dovecot: tests run their own.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
