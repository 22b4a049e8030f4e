#!/usr/bin/env bash
# Build the test node's container images without a registry or a Docker engine: root
# filesystems from Debian's packages (debootstrap --variant=minbase, from the mirror apt is
# configured with), packed into OCI layouts with umoci and into docker archives with skopeo.
#
#   tools/images/build.sh pause     BIN_DIR          the sandbox image (our static pause binary)
#   tools/images/build.sh postgres                   PostgreSQL 17 + pgvector (managed stores in tests)
#   tools/images/build.sh aienv     AIENV_BINARY     the aienv image (binary + packages/aienv.txt)
#   tools/images/build.sh ollama    BIN_DIR          Ollama, CPU only (tools/ollama/build.sh builds it)
#
# Each prints "<archive path> <image reference>". Archives are cached under
# ${AIENV_CACHE:-$HOME/.cache/aienv}/images, keyed by a hash of their inputs (recipe, package
# list, binaries); the Debian root filesystems are cached separately, so a new aienv binary only
# adds a layer. The Dockerfile at the repository root builds the same aienv image for users from
# the same package list.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}/images"
SUITE=trixie
# Users of the images (the public postgres/pgvector images use 999 too).
PG_UID=999
AIENV_UID=65532
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() { # need CMD PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  [[ $EUID -eq 0 ]] || die "$1 is missing: apt-get install $2"
  log "apt-get install $2"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# The mirror apt already uses (deb822 sources or sources.list), so nothing new is contacted.
apt_mirror() {
  local m
  m="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n $m ]] || m="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n $m ]] || die "no Debian mirror found in apt's configuration"
  echo "$m"
}

packages() { grep -Ev '^\s*(#|$)' "$HERE/packages/$1.txt" | tr '\n' ' '; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# rootfs NAME: a cached Debian root filesystem with packages/NAME.txt installed; prints its dir.
rootfs() {
  local name=$1 key dir
  # Keyed by what goes into it: the package list, the suite and the finishing steps.
  key="$(hash_of "$HERE/packages/$name.txt" <(echo "$SUITE"; declare -f finish_rootfs))"
  dir="$CACHE/rootfs-$name-$key"
  if [[ -f $dir/.done ]]; then echo "$dir"; return; fi
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  need debootstrap debootstrap
  # Root filesystems (and their layouts) of older inputs are superseded.
  rm -rf "$CACHE/rootfs-$name-"* "$CACHE/layout-rootfs-$name-"*
  mkdir -p "$CACHE"
  log "debootstrap $SUITE ($name: $(packages "$name")) — about a minute"
  local pkgs
  pkgs="$(packages "$name" | tr ' ' ',' | sed 's/,$//')"
  debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$dir.tmp" "$(apt_mirror)" \
    >"$CACHE/rootfs-$name.log" 2>&1 || { tail -n 20 "$CACHE/rootfs-$name.log" >&2; die "debootstrap failed"; }
  finish_rootfs "$name" "$dir.tmp"
  touch "$dir.tmp/.done"
  mv "$dir.tmp" "$dir"
  echo "$dir"
}

# What a container needs and a package install leaves behind.
finish_rootfs() {
  local name=$1 r=$2
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* \
    "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/* "$r"/debootstrap
  : >"$r/etc/resolv.conf"
  case $name in
  postgres)
    # The package's own cluster is not the pod's: the pod initialises its data directory.
    rm -rf "$r"/var/lib/postgresql/*/main "$r"/etc/postgresql/*/main
    chroot "$r" groupmod -g "$PG_UID" postgres
    chroot "$r" usermod -u "$PG_UID" -g "$PG_UID" postgres
    chroot "$r" chown -R "$PG_UID:$PG_UID" /var/lib/postgresql /var/run/postgresql
    ;;
  aienv | ollama)
    echo "aienv:x:$AIENV_UID:$AIENV_UID:aienv:/home/aienv:/usr/sbin/nologin" >>"$r/etc/passwd"
    echo "aienv:x:$AIENV_UID:" >>"$r/etc/group"
    mkdir -p "$r/home/aienv"
    chown "$AIENV_UID:$AIENV_UID" "$r/home/aienv"
    ;;
  esac
}

# pack REF ARCHIVE LAYOUT: docker archive of LAYOUT:image, atomically.
pack() {
  local ref=$1 archive=$2 layout=$3 name
  rm -f "$archive.tmp"
  skopeo copy --quiet "oci:$layout:image" "docker-archive:$archive.tmp:$ref" >&2
  mv "$archive.tmp" "$archive"
  # Older archives of the same image are superseded (each is a few hundred MB).
  name="$(basename "$archive")"
  find "$CACHE" -maxdepth 1 -name "${name%%-*}-*.tar" ! -name "$name" -delete
}

new_layout() { # new_layout DIR
  rm -rf "$1"
  umoci init --layout "$1"
  umoci new --image "$1:image"
}

# base_layout NAME: a cached OCI layout holding the rootfs of NAME as one layer (tag "image").
base_layout() {
  local name=$1 root key dir
  root="$(rootfs "$name")"
  key="$(basename "$root")"
  dir="$CACHE/layout-$key"
  if [[ -f $dir/.done ]]; then echo "$dir"; return; fi
  log "packing the $name root filesystem"
  new_layout "$dir.tmp"
  umoci insert --image "$dir.tmp:image" "$root" / >&2
  touch "$dir.tmp/.done"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  echo "$dir"
}

build_pause() {
  local bin=$1/pause ref=aienv.local/pause:3.10 key archive work
  [[ -x $bin ]] || die "no pause binary in $1 (tools/k8s/build.sh builds it)"
  key="$(hash_of "$HERE/build.sh" "$bin")"
  archive="$CACHE/pause-$key.tar"
  if [[ ! -f $archive ]]; then
    need umoci umoci
    need skopeo skopeo
    mkdir -p "$CACHE"
    work="$(mktemp -d "$CACHE/.pause.XXXXXX")"
    new_layout "$work/oci"
    umoci insert --image "$work/oci:image" "$bin" /pause >&2
    umoci config --image "$work/oci:image" --no-history --config.entrypoint /pause \
      --config.user 65535:65535 --architecture amd64 --os linux >&2
    pack "$ref" "$archive" "$work/oci"
    rm -rf "$work"
  fi
  echo "$archive $ref"
}

build_postgres() {
  local ref=aienv.local/postgres:17-pgvector key archive layout work pgbin
  key="$(hash_of "$HERE/build.sh" "$HERE/packages/postgres.txt")"
  archive="$CACHE/postgres-$key.tar"
  if [[ ! -f $archive ]]; then
    need umoci umoci
    need skopeo skopeo
    layout="$(base_layout postgres)"
    pgbin="$(cd "$(rootfs postgres)" && ls -d usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    work="$(mktemp -d "$CACHE/.postgres.XXXXXX")"
    cp -al "$layout" "$work/oci"
    umoci config --image "$work/oci:image" --no-history --config.user "$PG_UID:$PG_UID" \
      --config.env "PATH=/$pgbin:$BASE_PATH" --config.env LANG=C.UTF-8 \
      --config.cmd postgres --config.stopsignal SIGINT --architecture amd64 --os linux >&2
    pack "$ref" "$archive" "$work/oci"
    rm -rf "$work"
  fi
  echo "$archive $ref"
}

# binary_image NAME BINARY REF [CONFIG_ARG...]: the root filesystem of packages/NAME.txt plus
# BINARY as /usr/local/bin/NAME, its entrypoint, run as the aienv user; CONFIG_ARGs go to
# `umoci config` (command, environment).
binary_image() {
  local name=$1 bin=$2 ref=$3 key archive layout work
  shift 3
  key="$(hash_of "$HERE/build.sh" "$HERE/packages/$name.txt" "$bin")"
  archive="$CACHE/$name-$key.tar"
  if [[ ! -f $archive ]]; then
    need umoci umoci
    need skopeo skopeo
    layout="$(base_layout "$name")"
    work="$(mktemp -d "$CACHE/.$name.XXXXXX")"
    cp -al "$layout" "$work/oci"
    # Debug builds carry ~10x their code in debuginfo, which a container never reads.
    mkdir -p "$work/layer"
    strip --strip-debug -o "$work/layer/$name" "$bin"
    chmod 0755 "$work/layer/$name"
    umoci insert --image "$work/oci:image" "$work/layer/$name" "/usr/local/bin/$name" >&2
    umoci config --image "$work/oci:image" --no-history --config.user "$AIENV_UID:$AIENV_UID" \
      --config.env "PATH=$BASE_PATH" --config.env HOME=/home/aienv --config.workingdir /home/aienv \
      --config.entrypoint "/usr/local/bin/$name" "$@" --architecture amd64 --os linux >&2
    pack "$ref" "$archive" "$work/oci"
    rm -rf "$work"
  fi
  echo "$archive $ref"
}

build_aienv() {
  [[ -x $1 ]] || die "no aienv binary at $1"
  binary_image aienv "$1" aienv.local/aienv:dev
}

# The server a MemoryStore's `embedding.server` runs for `provider.type: ollama`, like Ollama's own
# image: the binary as entrypoint, `serve` as command. Models come from a volume or a pull.
build_ollama() {
  [[ -x $1/ollama ]] || die "no ollama binary in $1 (tools/ollama/build.sh builds it)"
  binary_image ollama "$1/ollama" aienv.local/ollama:cpu \
    --config.env OLLAMA_HOST=0.0.0.0:11434 --config.cmd serve
}

case "${1:-}" in
pause) build_pause "${2:?usage: build.sh pause BIN_DIR}" ;;
postgres) build_postgres ;;
aienv) build_aienv "${2:?usage: build.sh aienv AIENV_BINARY}" ;;
ollama) build_ollama "${2:?usage: build.sh ollama BIN_DIR}" ;;
*)
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
