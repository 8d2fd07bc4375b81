#!/bin/sh
# Install what the benchmarks in bench/ need on Debian 12 (bookworm).
#
#  - whatever scripts/setup-deps.sh installs (qproxy's own dependencies and
#    the apt entries for bookworm-backports and trixie sources);
#  - nginx, the HTTP/1.1 backend both proxies forward to, and the build tools
#    and libraries nghttp2's programs need;
#  - nghttpx and h2load (nghttp2 1.64.0 with HTTP/3), built from Debian's
#    source packages against their own wolfSSL (--enable-all --enable-quic)
#    and ngtcp2, into $QPROXY_BENCH_PREFIX (default /opt/qproxy-bench). That
#    prefix is never the one qproxy links (/opt/qproxy-deps).
#
# Idempotent: each build writes a stamp with its version and configure flags
# and is skipped while the stamp matches; a changed flag rebuilds it and
# everything built on it.
set -eu

PREFIX=${QPROXY_BENCH_PREFIX:-/opt/qproxy-bench}
WOLFSSL_VERSION=5.7.2
NGTCP2_VERSION=1.11.0
NGHTTP2_VERSION=1.64.0
JOBS=2

TOP=$(cd "$(dirname "$0")/.." && pwd)
TAG=bench-setup
SUDO=
# shellcheck source=scripts/lib-build.sh
. "$TOP/scripts/lib-build.sh"
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "run as root (or install sudo)"
	SUDO=sudo
fi

PKGS="nginx build-essential autoconf automake libtool pkg-config libev-dev
libc-ares-dev zlib1g-dev libnghttp3-dev openssl python3"

# wolfSSL for nghttpx wants the full OpenSSL compatibility layer
# (--enable-all). AES-NI, the x86-64 assembly and the SP code for P-256,
# P-384 and RSA (--enable-sp --enable-sp-asm) are what the wolfSSL qproxy
# links uses too, so that neither side is measured with slower crypto.
WOLFSSL_FLAGS="--enable-shared --disable-static --enable-all --enable-quic
--enable-aesni --enable-intelasm --enable-sp --enable-sp-asm
--disable-examples --disable-crypttests --disable-benchmark"
NGTCP2_FLAGS="--enable-shared --disable-static --with-wolfssl
--without-gnutls --without-openssl --without-boringssl --without-picotls
--enable-lib-only"
NGHTTP2_FLAGS="--enable-app --enable-http3 --with-wolfssl --without-openssl
--with-libngtcp2 --with-libnghttp3 --with-libev --with-libcares --with-zlib
--disable-examples --without-jemalloc
--without-systemd --without-mruby --without-neverbleed --without-libbpf"
# The programs find the private libraries through their RUNPATH.
NGHTTP2_LDFLAGS="-Wl,-rpath,$PREFIX/lib"

STAMPS=$PREFIX/share/qproxy-bench

# The stamps join each list of flags into one line.
# shellcheck disable=SC2086,SC2116
wolfssl_stamp() {
	printf 'wolfssl %s %s\n' "$WOLFSSL_VERSION" "$(echo $WOLFSSL_FLAGS)"
}
# shellcheck disable=SC2086,SC2116
ngtcp2_stamp() {
	printf 'ngtcp2 %s %s\n' "$NGTCP2_VERSION" "$(echo $NGTCP2_FLAGS)"
	wolfssl_stamp
}
# shellcheck disable=SC2086,SC2116
nghttp2_stamp() {
	printf 'nghttp2 %s %s %s\n' "$NGHTTP2_VERSION" "$NGHTTP2_LDFLAGS" \
	    "$(echo $NGHTTP2_FLAGS)"
	ngtcp2_stamp
}

install_packages() {
	# shellcheck disable=SC2086
	have_pkgs $PKGS && return 0
	say "installing Debian packages"
	# Try with the package lists at hand first; refresh them if that fails.
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
	    --no-install-recommends $PKGS >/dev/null 2>&1 || {
		$SUDO apt-get update -q >/dev/null || die "apt-get update failed"
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
		    --no-install-recommends $PKGS >/dev/null ||
		    die "apt-get install failed"
	}
}

# Runs configure, make and make install of the source tree $1 quietly; on a
# failure shows the end of the log.
build_tree() {
	dir=$1
	shift
	log=$dir/qproxy-bench-build.log
	(
		cd "$dir"
		"$@" >"$log" 2>&1
		make -j"$JOBS" >>"$log" 2>&1
		$SUDO make install >>"$log" 2>&1
	) || { tail -n 40 "$log" >&2; return 1; }
}

build_wolfssl() {
	stamp_is wolfssl "$(wolfssl_stamp)" &&
	    [ -f "$PREFIX/lib/pkgconfig/wolfssl.pc" ] && return 0
	src=$(mktemp -d)/wolfssl
	say "building wolfSSL $WOLFSSL_VERSION (--enable-all --enable-quic)" \
	    "into $PREFIX"
	fetch_source wolfssl "$src"
	[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi >/dev/null 2>&1) ||
	    die "autoreconf of wolfSSL failed"
	# shellcheck disable=SC2086
	build_tree "$src" ./configure --prefix="$PREFIX" $WOLFSSL_FLAGS ||
	    die "wolfSSL build failed"
	rm -rf "$(dirname "$src")"
	stamp_write wolfssl "$(wolfssl_stamp)"
}

build_ngtcp2() {
	stamp_is ngtcp2 "$(ngtcp2_stamp)" &&
	    [ -f "$PREFIX/lib/pkgconfig/libngtcp2_crypto_wolfssl.pc" ] && return 0
	src=$(mktemp -d)/ngtcp2
	say "building ngtcp2 $NGTCP2_VERSION (wolfSSL helper) into $PREFIX"
	fetch_source ngtcp2 "$src"
	[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi >/dev/null 2>&1) ||
	    die "autoreconf of ngtcp2 failed"
	# shellcheck disable=SC2086
	build_tree "$src" env PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" \
	    ./configure --prefix="$PREFIX" $NGTCP2_FLAGS ||
	    die "ngtcp2 build failed"
	rm -rf "$(dirname "$src")"
	stamp_write ngtcp2 "$(ngtcp2_stamp)"
}

build_nghttp2() {
	stamp_is nghttp2 "$(nghttp2_stamp)" && [ -x "$PREFIX/bin/nghttpx" ] &&
	    [ -x "$PREFIX/bin/h2load" ] && return 0
	src=$(mktemp -d)/nghttp2
	say "building nghttpx and h2load $NGHTTP2_VERSION (HTTP/3) into $PREFIX"
	# Its Debian tarball has been seen to answer 404 while the upstream one
	# downloads; for a peer that only runs on loopback in a benchmark the
	# upstream source is good enough, with a warning.
	fetch_source nghttp2 "$src" patches-optional
	# The upstream tarball is a git export without configure.
	(cd "$src" && autoreconf -fi >/dev/null 2>&1) ||
	    die "autoreconf of nghttp2 failed"
	# shellcheck disable=SC2086
	build_tree "$src" env PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" \
	    ./configure --prefix="$PREFIX" LDFLAGS="$NGHTTP2_LDFLAGS" \
	    $NGHTTP2_FLAGS ||
	    die "nghttp2 build failed"
	rm -rf "$(dirname "$src")"
	"$PREFIX/bin/h2load" --version >/dev/null 2>&1 ||
	    die "the h2load just built does not run"
	"$PREFIX/bin/nghttpx" --version >/dev/null 2>&1 ||
	    die "the nghttpx just built does not run"
	stamp_write nghttp2 "$(nghttp2_stamp)"
}

# qproxy's own dependencies, and the apt entries fetch_source needs.
sh "$TOP/scripts/setup-deps.sh" || die "scripts/setup-deps.sh failed"
install_packages
build_wolfssl
build_ngtcp2
build_nghttp2
say "ok (nghttpx and h2load in $PREFIX/bin)"
