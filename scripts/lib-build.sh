# shellcheck shell=sh
# Shell functions shared by scripts/setup-deps.sh and bench/setup.sh, which
# source this file. Before sourcing, the caller sets TAG (the prefix of its
# messages) and SUDO (empty when already root).

say() { printf '%s: %s\n' "$TAG" "$*"; }
die() { printf '%s: error: %s\n' "$TAG" "$*" >&2; exit 1; }

# True when every Debian package named is installed.
have_pkgs() {
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
		    grep -q '^install ok installed$' || return 1
	done
}

# Download a trixie source package's files and unpack them into $2, applying
# Debian's patches. The .dsc is optional: only the tarballs are needed. With
# a third argument "patches-optional", a Debian tarball that cannot be
# downloaded is only warned about, and the upstream source is built as is.
# Needs the trixie deb-src entry scripts/setup-deps.sh adds.
fetch_source() {
	pkg=$1 dir=$2 optional=${3:-}
	work=$(mktemp -d)
	chmod 755 "$work"	# apt's download user writes here
	(
		cd "$work"
		apt-get source -q --print-uris "$pkg/trixie" 2>/dev/null |
		    awk -F"'" '/^'"'"'/ { print $2, $0 }' |
		    while read -r url rest; do
			    name=$(printf '%s\n' "$rest" | awk '{ print $2 }')
			    case "$name" in
			    *.dsc) /usr/lib/apt/apt-helper download-file \
				"$url" "$name" >/dev/null 2>&1 || true ;;
			    *.debian.tar.*) /usr/lib/apt/apt-helper download-file \
				"$url" "$name" >/dev/null 2>&1 ||
				    if [ "$optional" = patches-optional ]; then
					    echo "$TAG: warning: download of" \
						"$name failed; building $pkg" \
						"without Debian's patches" >&2
				    else
					    echo "download of $name failed" >&2
					    exit 1
				    fi ;;
			    *) /usr/lib/apt/apt-helper download-file \
				"$url" "$name" >/dev/null 2>&1 ||
				    { echo "download of $name failed" >&2;
				      exit 1; } ;;
			    esac
		    done
	) || die "cannot download the $pkg source package"
	orig=$(ls "$work"/*.orig.tar.* 2>/dev/null | head -n 1)
	deb=$(ls "$work"/*.debian.tar.* 2>/dev/null | head -n 1)
	[ -n "$orig" ] || die "no upstream tarball for $pkg"
	rm -rf "$dir"
	mkdir -p "$dir"
	tar -xf "$orig" -C "$dir" --strip-components=1
	if [ -n "$deb" ]; then
		tar -xf "$deb" -C "$dir"
		if [ -f "$dir/debian/patches/series" ]; then
			grep -v '^[[:space:]]*\(#\|$\)' "$dir/debian/patches/series" |
			    while read -r p _; do
				    patch -d "$dir" -p1 -s -N <"$dir/debian/patches/$p" ||
					die "patch $p of $pkg does not apply"
			    done
		fi
	fi
	rm -rf "$work"
}

# What a build was made from, kept as a stamp in $STAMPS (set by the caller):
# stamp_is NAME TEXT is true when NAME's stamp says TEXT; stamp_write
# records it after a build.
stamp_is() {
	[ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]
}
stamp_write() {
	$SUDO mkdir -p "$STAMPS"
	printf '%s\n' "$2" | $SUDO tee "$STAMPS/$1" >/dev/null
}
