#!/bin/sh
# Install everything qproxy needs to build and test on Debian 12 (bookworm).
#
#  - Debian packages: toolchain, libev, inih, nghttp3 1.x and the HTTP/3 test
#    clients (libcurl with HTTP/3, ngtcp2's gtlsclient) from bookworm-backports,
#    and Chromium and Firefox, browsers the end-to-end tests also fetch with;
#  - wolfSSL with QUIC and ngtcp2 with its wolfSSL crypto helper, built as static
#    archives from Debian's own source packages (with Debian's patches, then
#    qproxy's own for both in scripts/patches/) into $QPROXY_DEPS_PREFIX
#    (default /opt/qproxy-deps).
#
# Idempotent: every step checks first and does nothing when its result is there.
# Archive locations are derived from this machine's apt configuration.
set -eu

PREFIX=${QPROXY_DEPS_PREFIX:-/opt/qproxy-deps}
WOLFSSL_VERSION=5.7.2
NGTCP2_VERSION=1.11.0
JOBS=$(nproc 2>/dev/null || echo 2)

TAG=setup-deps
SUDO=
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib-build.sh"
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "run as root (or install sudo)"
	SUDO=sudo
fi

# Debian packages from bookworm itself.
BASE_PKGS="build-essential autoconf automake libtool pkg-config dpkg-dev patch
xz-utils ca-certificates openssl libev-dev libinih-dev libcrypt-dev zlib1g-dev python3 python3-pytest
python3-pytest-xdist python3-pycurl python3-cryptography python3-prometheus-client
python3-pyflakes
mandoc libsystemd-dev
man-db systemd logrotate clang libclang-rt-14-dev chromium firefox-esr"
# Debian packages that must come from bookworm-backports.
BPO_PKGS="libnghttp3-dev libcurl3-gnutls ngtcp2-client"

# The URI of the main Debian archive as this machine's apt knows it.
archive_uri() {
	uri=
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		uri=$(awk '
		    /^URIs:/ { u = $2 }
		    /^Suites:/ { for (i = 2; i <= NF; i++)
			if ($i == "bookworm") { print u; exit } }
		    /^$/ { u = "" }' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		    /etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "cannot find the Debian archive in apt's sources"
	printf '%s\n' "$uri"
}

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
EXTRA_SOURCES=/etc/apt/sources.list.d/qproxy-deps.sources
PIN_FILE=/etc/apt/preferences.d/qproxy-deps

add_sources() {
	[ -f "$EXTRA_SOURCES" ] && return 0
	uri=$(archive_uri)
	say "adding bookworm-backports and trixie source entries from $uri"
	$SUDO tee "$EXTRA_SOURCES" >/dev/null <<EOF
# Written by qproxy's scripts/setup-deps.sh.
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: $KEYRING

Types: deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: $KEYRING
EOF
	# Never take trixie binaries, even if an entry for them appears later.
	$SUDO tee "$PIN_FILE" >/dev/null <<EOF
Package: *
Pin: release n=trixie
Pin-Priority: -1
EOF
	APT_UPDATED=
}

APT_UPDATED=
apt_update() {
	[ -n "$APT_UPDATED" ] && return 0
	$SUDO apt-get update -q >/dev/null || die "apt-get update failed"
	APT_UPDATED=1
}

install_packages() {
	# shellcheck disable=SC2086
	if have_pkgs $BASE_PKGS $BPO_PKGS &&
	    dpkg --compare-versions \
	    "$(dpkg-query -W -f='${Version}' libcurl3-gnutls)" ge 8; then
		return 0
	fi
	add_sources
	apt_update
	say "installing Debian packages"
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
	    --no-install-recommends $BASE_PKGS >/dev/null ||
	    die "apt-get install failed"
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
	    --no-install-recommends -t bookworm-backports $BPO_PKGS >/dev/null ||
	    die "apt-get install from bookworm-backports failed"
}

pc() {
	PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" pkg-config "$@"
}

# Each build records what it was built from; a change to a version or a flag
# below rebuilds it (and ngtcp2 after wolfSSL) on the next run.
STAMPS=$PREFIX/share/qproxy-deps
# HAVE_SECRET_CALLBACK gives wolfSSL_set_tls13_secret_cb for keylog_file.
# --enable-sp --enable-sp-asm: wolfSSL's P-256/P-384 and RSA code for x86-64
# instead of its generic big-number code; the ECDHE and ECDSA of each
# handshake took about two thirds of its instructions before.
# CUSTOM_RAND_GENERATE_BLOCK: wolfSSL draws its random bytes from
# qproxy_rand_block (src/rng.c: getrandom(2)) instead of a Hash-DRBG per RNG
# object, each started with a self-test: ngtcp2's HKDF makes one per key
# derivation, which was 60 % of a handshake's instructions.
# WOLFSSL_ALWAYS_VERIFY_CB: the verify callback is called for a client's
# certificate that verified too, not only for one that failed: a listener's
# client_ca reads the client's identity there (src/tls.c); --enable-crl
# checks client certificates against a listener's client_crl.
WOLFSSL_CPPFLAGS="-DHAVE_SECRET_CALLBACK -DWOLFSSL_ALWAYS_VERIFY_CB"
WOLFSSL_CPPFLAGS="$WOLFSSL_CPPFLAGS -DCUSTOM_RAND_GENERATE_BLOCK=qproxy_rand_block"
WOLFSSL_FLAGS="--enable-static --disable-shared --with-pic --enable-quic
--enable-session-ticket --enable-earlydata --enable-psk --enable-harden --enable-crl
--enable-altcertchains --enable-aesni --enable-intelasm --enable-sp
--enable-sp-asm --disable-hashdrbg --disable-examples --disable-crypttests
--disable-benchmark"
NGTCP2_FLAGS="--enable-static --disable-shared --with-pic --with-wolfssl
--without-gnutls --without-openssl --without-boringssl --without-picotls
--enable-lib-only"

# qproxy's own patches to wolfSSL and ngtcp2, after Debian's (each file
# says why).
WOLFSSL_PATCHES=$(ls "$HERE"/patches/wolfssl-*.patch 2>/dev/null || true)
NGTCP2_PATCHES=$(ls "$HERE"/patches/ngtcp2-*.patch 2>/dev/null || true)

wolfssl_stamp() {
	printf 'wolfssl %s %s %s %s\n' "$WOLFSSL_VERSION" "$WOLFSSL_CPPFLAGS" \
	    "$(echo $WOLFSSL_FLAGS)" \
	    "$(cat /dev/null $WOLFSSL_PATCHES | cksum | cut -d' ' -f1)"
}
ngtcp2_stamp() {
	printf 'ngtcp2 %s %s %s\n' "$NGTCP2_VERSION" "$(echo $NGTCP2_FLAGS)" \
	    "$(cat /dev/null $NGTCP2_PATCHES | cksum | cut -d' ' -f1)"
	wolfssl_stamp
}

build_wolfssl() {
	if stamp_is wolfssl "$(wolfssl_stamp)" && pc --exists wolfssl &&
	    [ -f "$PREFIX/lib/libwolfssl.a" ]; then
		return 0
	fi
	add_sources
	apt_update
	src=$(mktemp -d)/wolfssl
	say "building wolfSSL $WOLFSSL_VERSION with QUIC into $PREFIX"
	fetch_source wolfssl "$src"
	for p in $WOLFSSL_PATCHES; do
		patch -d "$src" -p1 -s -N <"$p" ||
		    die "$(basename "$p") does not apply to wolfSSL"
	done
	(
		cd "$src"
		[ -x configure ] || autoreconf -fi >/dev/null 2>&1
		# the prototype wolfSSL's random.c needs for the custom source
		printf '%s\n' '#ifndef __ASSEMBLER__' \
		    'int qproxy_rand_block(unsigned char *, unsigned int);' \
		    '#endif' >qproxy-rand.h
		# shellcheck disable=SC2086
		./configure -q --prefix="$PREFIX" CPPFLAGS="$WOLFSSL_CPPFLAGS" \
		    C_EXTRA_FLAGS="-include $src/qproxy-rand.h" \
		    $WOLFSSL_FLAGS >/dev/null
		make -s -j"$JOBS" >/dev/null 2>&1 || make -j"$JOBS"
		$SUDO make -s install >/dev/null
	) || die "wolfSSL build failed"
	rm -rf "$(dirname "$src")"
	stamp_write wolfssl "$(wolfssl_stamp)"
}

build_ngtcp2() {
	if stamp_is ngtcp2 "$(ngtcp2_stamp)" &&
	    pc --exists libngtcp2_crypto_wolfssl &&
	    [ -f "$PREFIX/lib/libngtcp2_crypto_wolfssl.a" ]; then
		return 0
	fi
	add_sources
	apt_update
	src=$(mktemp -d)/ngtcp2
	say "building ngtcp2 $NGTCP2_VERSION with its wolfSSL helper into $PREFIX"
	fetch_source ngtcp2 "$src"
	for p in $NGTCP2_PATCHES; do
		patch -d "$src" -p1 -s -N <"$p" ||
		    die "$(basename "$p") does not apply to ngtcp2"
	done
	(
		cd "$src"
		[ -x configure ] || autoreconf -fi >/dev/null 2>&1
		# libwolfssl.a needs libm at link time (its Libs.private), and
		# configure's link tests the random source qproxy supplies.
		cc -O2 -c -o qproxy-rng.o "$HERE/../src/rng.c" ||
		    die "cannot compile src/rng.c"
		# shellcheck disable=SC2086
		PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" \
		    LIBS="-lm -lpthread $src/qproxy-rng.o" \
		    ./configure -q --prefix="$PREFIX" $NGTCP2_FLAGS >/dev/null
		make -s -j"$JOBS" >/dev/null 2>&1 || make -j"$JOBS"
		$SUDO make -s install >/dev/null
	) || die "ngtcp2 build failed"
	rm -rf "$(dirname "$src")"
	stamp_write ngtcp2 "$(ngtcp2_stamp)"
}

install_packages
build_wolfssl
build_ngtcp2
say "ok (libraries in $PREFIX)"
