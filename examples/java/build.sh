#!/usr/bin/env bash
# Build the Java example without Maven: grpc-java, protobuf-java, protoc and the grpc-java protoc
# plugin come from Debian's packages (bookworm: grpc-java 1.41.3, protobuf 3.21.12), fetched
# with `apt-get download` and unpacked into a cache directory (nothing is installed system-wide,
# no root needed once apt's package lists exist). protoc generates the messages and stubs from
# proto/, javac (the JDK on the machine, 17+) compiles them with src/.
#
#   examples/java/build.sh          # then examples/java/run.sh [host:port]
#   JAVA_DEPS=/some/dir             # where the packages go (default ~/.cache/integration-sidecar/java)
#
# Output: examples/java/build/classes and build/classpath (what run.sh uses).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
deps=${JAVA_DEPS:-$HOME/.cache/integration-sidecar/java}
build=$here/build

# Everything grpc-java's netty transport and protobuf support load at run time, the compiler,
# its plugin and their shared libraries, the well-known .proto files (libprotobuf-dev), and
# javax.annotation.Generated for compiling the plugin's stubs (the JDK dropped it in 11; the
# plugin of grpc-java 1.41 cannot omit it).
packages=(
    libgrpc-java libprotobuf-java libgoogle-common-protos-java libguava-java libgoogle-gson-java
    libperfmark-java libnetty-java libgeronimo-annotation-1.3-spec-java
    protobuf-compiler protobuf-compiler-grpc-java-plugin libprotoc32 libprotobuf32 libprotobuf-dev
)

root=$deps/root
if [ ! -f "$deps/.unpacked" ]; then
    mkdir -p "$deps/debs" "$root"
    if ! (cd "$deps/debs" && apt-get download -q "${packages[@]}" >&2); then
        # A fresh machine has no package lists yet; `apt-get update` needs root.
        [ "$(id -u)" = 0 ] || { echo "apt-get download failed: run apt-get update as root" >&2; exit 1; }
        apt-get update -q >&2
        (cd "$deps/debs" && apt-get download -q "${packages[@]}" >&2)
    fi
    for deb in "$deps"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
    touch "$deps/.unpacked"
fi

java=$root/usr/share/java
jars=(
    grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
    protobuf proto-google-common-protos guava gson perfmark-api
    netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common
    netty-handler netty-handler-proxy netty-resolver netty-transport
)
classpath=$(printf "$java/%s.jar:" "${jars[@]}")
classpath=${classpath%:}

rm -rf "$build"
mkdir -p "$build/generated" "$build/classes"
# The messages and stubs this client uses (and what they import).
LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu "$root/usr/bin/protoc" \
    -I "$repo/proto" -I "$root/usr/include" \
    --plugin=protoc-gen-grpc-java="$root/usr/bin/grpc_java_plugin" \
    --java_out="$build/generated" --grpc-java_out="$build/generated" \
    "$repo"/proto/integration/v1/{common,cache,ai,pubsub}.proto
# -proc:none: no annotation processors; -nowarn: generated code uses deprecated APIs.
find "$build/generated" "$here/src" -name '*.java' > "$build/sources.txt"
javac -proc:none -nowarn -encoding UTF-8 --release 17 \
    -cp "$classpath:$java/geronimo-annotation-1.3-spec.jar" \
    -d "$build/classes" @"$build/sources.txt"
echo "$build/classes:$classpath" > "$build/classpath"
echo "built $build/classes; run: $here/run.sh [host:port]" >&2
