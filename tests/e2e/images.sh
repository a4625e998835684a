# Sample images, built offline from files on this machine (sourced by tests, demo and bench).
#   ipfly_make_busybox_image OUT.tar NAME   2 layers: busybox-static rootfs, a hello file
#   ipfly_make_python_image OUT.tar NAME    3 layers, >= 200 MiB compressed: busybox rootfs,
#       ~200 MiB gzip of real files (/usr/lib/x86_64-linux-gnu, /usr/share), python3 + stdlib
IPFLY_E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ipfly_busybox_rootfs() {  # DIR
  local d=$1
  mkdir -p "$d/bin" "$d/proc" "$d/sys" "$d/dev" "$d/tmp" "$d/etc" "$d/lib64" "$d/usr/bin"
  cp "$(command -v busybox || echo /bin/busybox)" "$d/bin/busybox"
  for a in sh echo cat ls wc head sha256sum sleep true; do ln -sf busybox "$d/bin/$a"; done
  echo 'root:x:0:0:root:/:/bin/sh' > "$d/etc/passwd"
  echo 'root:x:0:' > "$d/etc/group"
  if [ -n "${MARKER:-}" ]; then echo "$MARKER" > "$d/etc/marker"; fi
  ln -sf usr/lib "$d/lib"
  ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$d/lib64/ld-linux-x86-64.so.2"
}

ipfly_make_busybox_image() {  # OUT.tar NAME
  local w; w=$(mktemp -d /tmp/ipfly-bb.XXXXXX)
  ipfly_busybox_rootfs "$w/l1"
  mkdir -p "$w/l2/etc"
  echo "hello from layer 2${MARKER:+ $MARKER}" > "$w/l2/etc/hello.txt"
  python3 "$IPFLY_E2E_DIR/make_oci_image.py" "$1" "$2" --cmd /bin/cat --cmd /etc/hello.txt \
    --dir "$w/l1" --dir "$w/l2"
  rm -rf "$w"
}

ipfly_make_python_image() {  # OUT.tar NAME
  local w; w=$(mktemp -d /tmp/ipfly-py.XXXXXX)
  ipfly_busybox_rootfs "$w/l1"
  python3 - "$w/big.list" "$w/py.list" <<'PY'
import os, sys
big, py = [], []
need = {"libm.so.6", "libz.so.1", "libexpat.so.1", "libc.so.6", "ld-linux-x86-64.so.2"}
total, limit = 0, 640 << 20
for base in ["/usr/lib/x86_64-linux-gnu", "/usr/share"]:
    for d, dirs, fs in os.walk(base):
        dirs.sort()
        for f in sorted(fs):
            p = os.path.join(d, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            if d == "/usr/lib/x86_64-linux-gnu" and f in need:
                continue
            if total < limit:
                total += os.path.getsize(p)
                big.append(p)
lib = "/usr/lib/x86_64-linux-gnu"
for f in sorted(need):
    py.append(os.path.realpath(os.path.join(lib, f)))
    if os.path.realpath(os.path.join(lib, f)) != os.path.join(lib, f):
        py.append(os.path.join(lib, f))  # the symlink too
py.append("/usr/bin/python3.11")
for d, dirs, fs in os.walk("/usr/lib/python3.11"):
    dirs[:] = sorted(x for x in dirs if x not in ("test", "idlelib", "tkinter", "turtledemo"))
    py.append(d)
    py.extend(os.path.join(d, f) for f in sorted(fs))
# Parent directories first, as tar extraction needs them.
def with_parents(paths):
    seen, out = set(), []
    for p in paths:
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            q = "/" + "/".join(parts[:i])
            if q not in seen:
                seen.add(q); out.append(q)
        if p not in seen:
            seen.add(p); out.append(p)
    return out
open(sys.argv[1], "w").write("\n".join(with_parents(big)) + "\n")
open(sys.argv[2], "w").write("\n".join(with_parents(py)) + "\n")
PY
  # /usr/lib and /usr/bin are real directories in the image; /lib and /bin link into them.
  python3 "$IPFLY_E2E_DIR/make_oci_image.py" "$1" "$2" \
    --cmd /usr/bin/python3.11 --cmd=-c --cmd='import json, email.parser, http.client; print("python ready")' \
    --dir "$w/l1" --list "$w/big.list" --list "$w/py.list"
  rm -rf "$w"
}
