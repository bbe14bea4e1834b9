#!/usr/bin/env bash
# Install everything Driftline's tests and demo need on a Debian machine with
# Python >= 3.11: the Debian packages the component tests run for real
# (prometheus, nginx, etcd-server, chromium for the HTML report) and those of the e2e tests' one-node cluster
# (../shared/k8s/README.md, "Node mode"), a virtualenv in .venv with the
# project and its test extras, and helm. Idempotent: fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(prometheus nginx etcd-server chromium
      containerd runc containernetworking-plugins iptables conntrack buildah debootstrap
      gcc libc6-dev nftables)
missing=()
for deb in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q 'install ok installed' || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # Installing must not start the system services: the tests run their own.
    echo exit 101 | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    $sudo rm -f /usr/sbin/policy-rc.d
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test,bench,explain]'
    touch "$stamp"
fi
scripts/install-helm.sh .venv/bin >/dev/null
