#!/bin/sh
# Rebuilds the committed eBPF object deterministically.
#
#   ebpf/bpf/build.sh [OUTPUT]      (default: ebpf/bpf/socket_trace.bpf.o)
#
# Needs clang-19 and llvm-strip-19 (Debian: apt-get install clang-19 llvm-19).
# Compiles from inside this directory with relative paths only, then strips the
# DWARF (which records absolute paths) while keeping .BTF/.BTF.ext for CO-RE, so
# two builds from any checkout give byte-identical output. tests/object_fresh.rs
# checks that the committed object matches this script's output.
set -eu

here=$(cd "$(dirname "$0")" && pwd -P)
out=${1:-"$here/socket_trace.bpf.o"}
case "$out" in
/*) ;;
*) out="$(pwd)/$out" ;;
esac

CLANG=${CLANG:-clang-19}
LLVM_STRIP=${LLVM_STRIP:-llvm-strip-19}

cd "$here"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$CLANG" -O2 -g -target bpf -D__TARGET_ARCH_x86 -I. -fdebug-prefix-map="$here"=. \
	-c socket_trace.bpf.c -o "$tmp"
"$LLVM_STRIP" -g "$tmp"
mv "$tmp" "$out"
