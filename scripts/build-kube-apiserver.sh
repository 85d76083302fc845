#!/usr/bin/env bash
# Build kube-apiserver and kubectl v1.20.2 from Debian bookworm's `kubernetes` source package,
# for tests/kubernetes/test_apiserver_e2e.py (no recent Kubernetes installs on these machines;
# bookworm's source package is the full upstream v1.20.2 tree and builds with Debian's Go).
#
# The tree and binaries live in a cache directory outside the clone (~1.9 GB), reused when
# present: a second run only checks the binaries and prints where they are. Needs root (apt).
#   KUBE_CACHE   cache directory (default ~/.cache/integration-sidecar/kube)
# Prints one line on stdout: the directory holding kube-apiserver and kubectl (and etcd is
# installed on PATH by apt). Progress goes to stderr.
set -euo pipefail

KUBE_VERSION=v1.20.2
CACHE=${KUBE_CACHE:-$HOME/.cache/integration-sidecar/kube}
BIN=$CACHE/bin

log() { echo "build-kube-apiserver: $*" >&2; }

reports_version() {  # $1: binary; true when it exists and says it is $KUBE_VERSION
    [ -x "$1" ] || return 1
    case $(basename "$1") in
        kubectl) "$1" version --client --short 2>/dev/null | grep -qx "Client Version: $KUBE_VERSION" ;;
        *) "$1" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION" ;;
    esac
}

if reports_version "$BIN/kube-apiserver" && reports_version "$BIN/kubectl" &&
    command -v etcd >/dev/null; then
    log "reusing $BIN"
    echo "$BIN"
    exit 0
fi

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 "$@" >&2; }

# `apt-get source` needs a deb-src entry. Mirror whatever Debian `deb` entries are configured
# (one-line sources.list or deb822 .sources), so the source comes from the same mirror.
add_deb_src() {
    local lists=() sources=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && lists+=("$f"); done
    for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && sources+=("$f"); done
    if { [ ${#lists[@]} -gt 0 ] && grep -qsE '^\s*deb-src\s' "${lists[@]}"; } ||
        { [ ${#sources[@]} -gt 0 ] && grep -qsE '^Types:.*\bdeb-src\b' "${sources[@]}"; }; then
        return
    fi
    local out=/etc/apt/sources.list.d/integration-sidecar-deb-src
    if [ ${#sources[@]} -gt 0 ]; then
        # deb822 stanzas are separated by blank lines; keep those whose URIs are a Debian archive.
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /URIs:[^\n]*debian/ && /Types:[^\n]*deb/ { sub(/Types:[^\n]*/, "Types: deb-src"); print }' \
            "${sources[@]}" > "$out.sources"
        [ -s "$out.sources" ] || rm -f "$out.sources"
    fi
    if [ ${#lists[@]} -gt 0 ]; then
        sed -nE 's/^\s*deb(\s+\[[^]]*\])?\s+(\S*debian\S*\s.*)$/deb-src\1 \2/p' "${lists[@]}" > "$out.list"
        [ -s "$out.list" ] || rm -f "$out.list"
    fi
    [ -e "$out.sources" ] || [ -e "$out.list" ] || { log "no Debian mirror configured in /etc/apt"; exit 1; }
    log "added deb-src entries: $(ls "$out".* | tr '\n' ' ')"
}

add_deb_src
apt_get update  # the source index is new, and package lists may be stale
apt_get install -y --no-install-recommends golang-go make rsync jq etcd-server dpkg-dev \
    golang-github-modern-go-reflect2-dev

mkdir -p "$CACHE/src" "$BIN"
tree=$(find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
if [ -z "$tree" ]; then
    log "apt-get source kubernetes into $CACHE/src"
    (cd "$CACHE/src" && apt_get source kubernetes)
    tree=$(find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
fi
[ -f "$tree/hack/lib/version.sh" ] || { log "no Kubernetes tree under $CACHE/src"; exit 1; }

# The vendored reflect2 v1.0.1 walks Go maps with the pre-1.18 runtime layout: built with
# Debian's Go 1.19 the API server crashes ("fatal error: fault" in UnsafeMapType.UnsafeIterate)
# the first time it encodes a map, e.g. an AdmissionReview for a webhook. v1.0.2 (Debian's
# golang-github-modern-go-reflect2-dev) is the upstream fix and a drop-in for the same API.
reflect2=$tree/vendor/github.com/modern-go/reflect2
if [ ! -f "$reflect2/go_above_118.go" ]; then
    log "replacing vendored reflect2 v1.0.1 with Debian's v1.0.2"
    rm -f "$reflect2"/*.go "$reflect2"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
        /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$reflect2/"
fi

# The tree is not a git checkout: hack/lib/version.sh reads the version from this file instead
# (without it the binaries say v0.0.0 and clients refuse them). A plain `go build` fails because
# the module's staging replacements are only wired up by the Makefile's GOPATH setup.
version_file=$CACHE/version.env
cat > "$version_file" <<EOF
KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
KUBE_GIT_TREE_STATE=clean
KUBE_GIT_VERSION=$KUBE_VERSION
KUBE_GIT_MAJOR=1
KUBE_GIT_MINOR=20
EOF

log "make WHAT='cmd/kube-apiserver cmd/kubectl' in $tree (several minutes cold)"
(cd "$tree" && make WHAT="cmd/kube-apiserver cmd/kubectl" KUBE_GIT_VERSION_FILE="$version_file" >&2)
install -m 0755 "$tree/_output/bin/kube-apiserver" "$tree/_output/bin/kubectl" "$BIN/"
reports_version "$BIN/kube-apiserver" || { log "$BIN/kube-apiserver does not report $KUBE_VERSION"; exit 1; }
reports_version "$BIN/kubectl" || { log "$BIN/kubectl does not report $KUBE_VERSION"; exit 1; }
log "built into $BIN"
echo "$BIN"
