# qproxy: a QUIC / HTTP/3 reverse proxy.
#
#   make            configure (first time) and build into build/
#   make check      install what the tests need, build, run every test
#                   (then again under AddressSanitizer + UBSan)
#   make demo       install, build and run qproxy on a demo configuration
#   make bench      qproxy against nghttpx, side by side (bench/RESULTS.md)
#   make install    PREFIX=/usr/local DESTDIR= by default (make uninstall)
#   make nomem      allocations failing in the running daemon, a long sweep
#                   (tests/integration/test_nomem.py; not part of check)

# Goals that must work before configure can (they install its inputs).
SELF_GOALS := check check-asan soak demo deps clean distclean bench bench-smoke \
	nomem
ifeq ($(filter $(SELF_GOALS),$(MAKECMDGOALS)),)
include config.mk
endif

B ?= build
# V=1 shows the full commands.
Q = $(if $(V),,@)
PREFIX ?= $(prefix)
# configure's directories (--sbindir, --mandir, --sysconfdir), under PREFIX
# when make is given one; the configuration is in /etc unless configure
# was told otherwise (its default, PREFIX/etc, is not where qproxy looks)
override prefix := $(PREFIX)
SBINDIR ?= $(sbindir)
MANDIR ?= $(mandir)
SYSCONFDIR ?= $(if $(filter $${prefix}/etc,$(value sysconfdir)),/etc,$(sysconfdir))
UNITDIR ?= $(PREFIX)/lib/systemd/system
PYTHON ?= /usr/bin/python3

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -O2 -g $(WARN_CFLAGS) $(SAN_CFLAGS) \
	$(DEP_CFLAGS) $(CFLAGS) $(CPPFLAGS) -DQPROXY_VERSION='"$(PACKAGE_VERSION)"'
ALL_LDFLAGS = $(SAN_CFLAGS) $(LDFLAGS)

# The daemon's modules; main.c is kept apart so unit tests can link the rest.
LIB_SRCS = src/log.c src/addr.c src/bytes.c src/config.c src/route.c \
	src/http1.c src/request.c src/bufq.c src/udp.c src/tls.c src/quic.c \
	src/h3.c src/exchange.c src/upstream.c src/stats.c src/strbuf.c \
	src/control.c src/server.c src/secret.c src/siphash.c src/replay.c \
	src/clients.c src/cid.c src/merge.c src/workers.c src/health.c \
	src/hist.c src/auth.c src/file.c src/state.c src/gcm.c \
	src/upgrade.c src/taken.c src/websocket.c src/compress.c
# wolfSSL's random source (scripts/setup-deps.sh): linked into every program.
RNG_OBJ = $(B)/rng.o
LIB_OBJS = $(LIB_SRCS:src/%.c=$(B)/%.o)

UNIT_TESTS = test_config test_route test_http1 test_request test_bufq \
	test_control test_log test_tls test_bytes test_upstream test_h3mem \
	test_h3ctrl test_h3fin \
	test_replay test_clients test_cid test_merge test_hist test_auth \
	test_state test_gcm test_udp test_taken test_compress
UNIT_BINS = $(UNIT_TESTS:%=$(B)/tests/%)

TOOLS = $(B)/tests/h3raw $(B)/tests/sendshim.so $(B)/tests/timeshift.so \
	$(B)/tests/execdelay.so $(B)/tests/agefill.so $(B)/tests/h3nomem.so \
	$(B)/tests/nomem.so $(B)/tests/chownlog.so $(B)/tests/strcmpcount.so \
	$(B)/tests/gznomem.so

all: $(B)/qproxy $(B)/qproxyctl

$(B)/qproxy: $(B)/main.o $(B)/libqproxy.a $(RNG_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(B)/qproxyctl: $(B)/qproxyctl.o $(B)/libqproxy.a $(RNG_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(B)/libqproxy.a: $(LIB_OBJS)
	$(Q)rm -f $@
	$(Q)ar rcs $@ $^

$(B)/%.o: src/%.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/tests/%.o: tests/unit/%.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc -MMD -MP -c -o $@ $<

$(B)/tests/test_%: $(B)/tests/test_%.o $(B)/libqproxy.a $(RNG_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

# test_request makes malloc fail on demand (request_compact's fallback)
$(B)/tests/test_request: ALL_LDFLAGS += -Wl,--wrap=malloc
# test_control and test_state make realloc fail on demand (a strbuf
# without memory; tests/unit/unit_realloc.c)
$(B)/tests/test_control $(B)/tests/test_state: ALL_LDFLAGS += -Wl,--wrap=realloc
$(B)/tests/test_control $(B)/tests/test_state: $(B)/tests/unit_realloc.o
# test_cid counts wolfCrypt's key set-ups
$(B)/tests/test_cid: ALL_LDFLAGS += -Wl,--wrap=wc_AesSetKeyDirect
# test_control puts a link in the control socket's place as it is bound
$(B)/tests/test_control: ALL_LDFLAGS += -Wl,--wrap=bind

$(B)/tests/h3raw.o: tests/tools/h3raw.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(B)/tests/h3raw: $(B)/tests/h3raw.o $(RNG_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

# ns per packet of each AES-GCM path: not a test, run by hand
$(B)/tests/gcmbench.o: tests/tools/gcmbench.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc -MMD -MP -c -o $@ $<

$(B)/tests/gcmbench: $(B)/tests/gcmbench.o $(B)/libqproxy.a $(RNG_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

# Preloaded into qproxy (sendshim, timeshift, agefill, execdelay, h3nomem,
# nomem, chownlog, strcmpcount, gznomem):
# built without the sanitizers, which must come first.
$(B)/tests/%.so: tests/tools/%.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(WARN_CFLAGS) -fPIC -shared -o $@ $< -ldl

# with frame pointers: ASan's stacks of an allocation go through it
$(B)/tests/nomem.so: CFLAGS += -fno-omit-frame-pointer

-include $(wildcard $(B)/*.d $(B)/tests/*.d)

# A wolfSSL or ngtcp2 that make deps built anew (it stamps each build)
# configures again, and with config.mk everything is compiled and linked
# against it: the libraries are static.
DEPS_STAMPS = $(wildcard $(DEPS_PREFIX)/share/qproxy-deps/wolfssl \
	$(DEPS_PREFIX)/share/qproxy-deps/ngtcp2)
# New CONFIGURE_FLAGS configure again (config.flags keeps the last given);
# without, configure runs again with the flags it had (config.status).
ifneq ($(CONFIGURE_FLAGS),)
$(shell [ "$$(cat config.flags 2>/dev/null)" = '$(CONFIGURE_FLAGS)' ] || \
    printf '%s\n' '$(CONFIGURE_FLAGS)' >config.flags)
endif
config.mk: configure config.mk.in $(DEPS_STAMPS) $(wildcard config.flags)
	if [ -n '$(CONFIGURE_FLAGS)' ] || [ ! -x config.status ]; then \
	    ./configure $(CONFIGURE_FLAGS); \
	else ./config.status --recheck && ./config.status; fi

configure: configure.ac
	autoreconf -fi

# Everything the tests use, built (and gcmbench, so that it keeps building).
tests: $(B)/qproxy $(B)/qproxyctl $(UNIT_BINS) $(TOOLS) $(B)/tests/gcmbench

# gcmcode.py: no AVX-512 instruction where a CPU without it may go (gcm.c)
unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done
	@if [ "$$(uname -m)" = x86_64 ]; then \
	    echo "== tests/tools/gcmcode.py $(B)/gcm.o"; \
	    $(PYTHON) tests/tools/gcmcode.py $(B)/gcm.o; fi

# The end-to-end tests mostly wait (for timeouts, for clients, for the
# backend: the suite's processes used about half of one core in a run at 6),
# so they run in TEST_JOBS pytest-xdist workers: on 2 cores, in a fresh
# clone's make check, 4 workers ran the plain suite in 4:50 and the
# sanitizer one in 7:22, 6 in 2:34 and 3:32 (with shorter waits in some
# tests; one worker took 16 minutes for both). TEST_JOBS=0 runs them one
# at a time, as does a machine without python3-pytest-xdist.
TEST_JOBS ?= 6
integration: $(B)/qproxy $(B)/qproxyctl $(TOOLS)
	@jobs=; if $(PYTHON) -c 'import xdist' 2>/dev/null; then \
	    jobs=--numprocesses=$(TEST_JOBS); elif [ "$(TEST_JOBS)" != 0 ]; then \
	    echo "python3-pytest-xdist is missing (make deps): the tests run one at a time"; fi; \
	set -x; QPROXY=$(abspath $(B)/qproxy) QPROXYCTL=$(abspath $(B)/qproxyctl) \
	    H3RAW=$(abspath $(B)/tests/h3raw) \
	    SENDSHIM=$(abspath $(B)/tests/sendshim.so) \
	    TIMESHIFT_LIB=$(abspath $(B)/tests/timeshift.so) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider --durations=10 $$jobs \
	    tests/integration

deps:
	sh scripts/setup-deps.sh

# pyflakes over the tests' and tools' Python: an unused name or a missing
# one fails the check as a C warning does.
PY_FILES = $(wildcard tests/integration/*.py tests/tools/*.py tests/soak/*.py \
	tests/fuzz/*.py bench/*.py scripts/*.py) scripts/h3get
lint:
	$(PYTHON) -m pyflakes $(PY_FILES)

# The README's test command: from a fresh clone, everything.
check: deps
	$(MAKE) lint
	$(MAKE) tests
	$(MAKE) unit
	$(MAKE) fuzz-replay
	$(MAKE) integration
	$(MAKE) bench-smoke
	$(MAKE) check-asan

# qproxy against nghttpx, side by side (bench/RESULTS.md). bench/setup.sh
# builds nghttpx and h2load into /opt/qproxy-bench the first time.
# BENCH_ARGS passes options to bench/run.py (--workloads, --repeat, ...).
bench:
	sh bench/setup.sh
	$(MAKE) all
	$(PYTHON) bench/run.py --out bench/out/latest.md $(BENCH_ARGS)

# A few hundred requests against each server: the harness still works.
bench-smoke:
	sh bench/setup.sh
	$(MAKE) all
	$(PYTHON) bench/run.py --smoke

# The same suite, built with AddressSanitizer and UBSan into build-asan/.
ASAN_CFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
check-asan: deps
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(MAKE) B=build-asan SAN_CFLAGS='$(ASAN_CFLAGS)' tests unit integration

# Ten minutes of mixed load (libcurl, gtlsclient and h2load, which
# bench/setup.sh builds) with loss, backend restarts and reloads
# (tests/soak/soak.py); not part of check. First on the plain build, where
# RSS means what it says and must come back within 10 %; then five minutes
# on the sanitizer build, where ASan's quarantine holds freed memory, so
# only its reports and the bodies and counters are checked. SOAK_ARGS
# passes options to the first, such as --duration 60.
soak: deps
	sh bench/setup.sh
	$(MAKE) tests
	$(MAKE) B=build-asan SAN_CFLAGS='$(ASAN_CFLAGS)' tests
	QPROXY=$(abspath build/qproxy) QPROXYCTL=$(abspath build/qproxyctl) \
	    $(PYTHON) tests/soak/soak.py $(SOAK_ARGS)
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	QPROXY=$(abspath build-asan/qproxy) \
	QPROXYCTL=$(abspath build-asan/qproxyctl) \
	    $(PYTHON) tests/soak/soak.py --duration 300 --rss-slack -1

# tests/integration/test_nomem.py at length, on the plain build then the
# sanitizer one: every NOMEM_STEP-th allocation of a round of mixed work
# failing in turn, then NOMEM_SEEDS rounds with NOMEM_PPM of them failing
# at random. About 2 s a round plain, 3 under ASan.
NOMEM_STEP ?= 3
NOMEM_SEEDS ?= 100
NOMEM_PPM ?= 3000
nomem:
	$(MAKE) tests
	$(MAKE) B=build-asan SAN_CFLAGS='$(ASAN_CFLAGS)' tests
	@set -e; for b in build build-asan; do \
	    for sweep in nth:1:0:$(NOMEM_STEP) random:1:$(NOMEM_SEEDS):$(NOMEM_PPM); do \
	    set -x; NOMEM_SWEEP=$$sweep \
	    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    QPROXY=$(abspath $$b/qproxy) QPROXYCTL=$(abspath $$b/qproxyctl) \
	    H3RAW=$(abspath $$b/tests/h3raw) \
	    SENDSHIM=$(abspath $$b/tests/sendshim.so) \
	    TIMESHIFT_LIB=$(abspath $$b/tests/timeshift.so) \
	    QPROXY_TEST_TIME_LIMIT=100000 \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/test_nomem.py; \
	    set +x; done; done

# libFuzzer targets, built with clang into build-fuzz/ (tests/fuzz/README.md).
# "make fuzz" runs each for FUZZ_TIME seconds, adding what it finds to
# build-fuzz/corpus/; "make fuzz-replay" runs every committed corpus file once.
FUZZ_B = build-fuzz
FUZZ_CC ?= clang
FUZZ_TIME ?= 60
# fuzz_udp's RSS passes libFuzzer's default 2 GB within an hour: ASan's
# quarantine and allocator caches, flat with ASAN_OPTIONS=quarantine_size_mb=0
FUZZ_RSS_MB ?= 4096
FUZZ_TARGETS = fuzz_config fuzz_http1 fuzz_request fuzz_control fuzz_udp \
	fuzz_cert
FUZZ_BINS = $(FUZZ_TARGETS:%=$(FUZZ_B)/%)
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
# (clang, unlike gcc, warns about vprintf-style calls in log.c)
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -O1 -g $(WARN_CFLAGS) \
	-Wno-format-nonliteral $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
	$(DEP_CFLAGS) -DQPROXY_VERSION='"fuzz"'
FUZZ_OBJS = $(LIB_SRCS:src/%.c=$(FUZZ_B)/%.o)

$(FUZZ_B)/%.o: src/%.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $< (fuzz)"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FUZZ_B)/tests/%.o: tests/fuzz/%.c config.mk
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Isrc -MMD -MP -c -o $@ $<

$(FUZZ_B)/libqproxy.a: $(FUZZ_OBJS)
	$(Q)rm -f $@
	$(Q)ar rcs $@ $^

$(FUZZ_B)/fuzz_%: $(FUZZ_B)/tests/fuzz_%.o $(FUZZ_B)/libqproxy.a $(FUZZ_B)/rng.o
	@echo "  LD      $@"
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(DEP_LIBS)

# fuzz_udp's listener: a throwaway key and certificate, made here, never kept.
$(FUZZ_B)/fuzz_udp.pem:
	@mkdir -p $(@D)
	$(Q)openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
	    -nodes -days 3650 -subj /CN=localhost -keyout $(FUZZ_B)/fuzz_udp.key \
	    -out $@ 2>/dev/null

-include $(wildcard $(FUZZ_B)/*.d $(FUZZ_B)/tests/*.d)

fuzz-build: $(FUZZ_BINS) $(FUZZ_B)/fuzz_udp.pem
# kept, so that a rebuild after a change compiles only what changed
.SECONDARY: $(FUZZ_TARGETS:%=$(FUZZ_B)/tests/%.o) $(FUZZ_B)/rng.o

fuzz: fuzz-build
	@failed=; for t in $(FUZZ_TARGETS); do \
	    echo "== $$t: $(FUZZ_TIME) s"; \
	    mkdir -p $(FUZZ_B)/corpus/$$t $(FUZZ_B)/crashes; \
	    dict=; test -f tests/fuzz/$$t.dict && dict=-dict=tests/fuzz/$$t.dict; \
	    $(FUZZ_B)/$$t -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -rss_limit_mb=$(FUZZ_RSS_MB) \
	        -artifact_prefix=$(FUZZ_B)/crashes/$$t- $$dict \
	        $(FUZZ_B)/corpus/$$t tests/fuzz/corpus/$$t || failed="$$failed $$t"; \
	done; \
	test -z "$$failed" || { echo "fuzz: crashed:$$failed"; exit 1; }

fuzz-replay: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    printf '== %s: ' $$t; ls tests/fuzz/corpus/$$t | wc -l; \
	    $(FUZZ_B)/$$t tests/fuzz/corpus/$$t/* >$(FUZZ_B)/$$t.replay.log 2>&1 || \
	        { tail -n 60 $(FUZZ_B)/$$t.replay.log; exit 1; }; \
	done

demo: deps
	$(MAKE) all
	sh scripts/demo.sh

# The unit is filled in from the SBINDIR of this very install. The
# configuration is made readable by the unit's group, qproxy, when it
# exists already (and the install runs as root). The configuration and
# the logrotate file, once there, are the operator's: never overwritten.
install: $(B)/qproxy $(B)/qproxyctl
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(SYSCONFDIR) \
	    $(DESTDIR)$(UNITDIR)
	install -m 755 $(B)/qproxy $(DESTDIR)$(SBINDIR)/qproxy
	install -m 755 $(B)/qproxyctl $(DESTDIR)$(SBINDIR)/qproxyctl
	install -m 644 man/qproxyctl.8 $(DESTDIR)$(MANDIR)/man8/qproxyctl.8
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    systemd/qproxy.service.in \
	    >$(DESTDIR)$(UNITDIR)/qproxy.service
	chmod 644 $(DESTDIR)$(UNITDIR)/qproxy.service
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' systemd/qproxy-metrics@.service.in \
	    >$(DESTDIR)$(UNITDIR)/qproxy-metrics@.service
	chmod 644 $(DESTDIR)$(UNITDIR)/qproxy-metrics@.service
	install -m 644 systemd/qproxy-metrics.socket \
	    $(DESTDIR)$(UNITDIR)/qproxy-metrics.socket
	install -m 644 man/qproxy.8 $(DESTDIR)$(MANDIR)/man8/qproxy.8
	install -m 644 man/qproxy.conf.5 $(DESTDIR)$(MANDIR)/man5/qproxy.conf.5
	test -e $(DESTDIR)$(SYSCONFDIR)/qproxy.conf || \
	    install -m 640 $$(getent group qproxy >/dev/null && \
	    [ "$$(id -u)" = 0 ] && echo -g qproxy) conf/qproxy.conf \
	    $(DESTDIR)$(SYSCONFDIR)/qproxy.conf
	install -d $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	test -e $(DESTDIR)$(SYSCONFDIR)/logrotate.d/qproxy || { \
	    sed -e 's|@SBINDIR@|$(SBINDIR)|g' conf/qproxy.logrotate.in \
	    >$(DESTDIR)$(SYSCONFDIR)/logrotate.d/qproxy && \
	    chmod 644 $(DESTDIR)$(SYSCONFDIR)/logrotate.d/qproxy; }

# What install wrote, but the configuration and the logrotate file: the
# operator's, kept (the latter does nothing once qproxy is gone).
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/qproxy $(DESTDIR)$(SBINDIR)/qproxyctl \
	    $(DESTDIR)$(MANDIR)/man8/qproxy.8 \
	    $(DESTDIR)$(MANDIR)/man8/qproxyctl.8 \
	    $(DESTDIR)$(MANDIR)/man5/qproxy.conf.5 \
	    $(DESTDIR)$(UNITDIR)/qproxy.service \
	    $(DESTDIR)$(UNITDIR)/qproxy-metrics@.service \
	    $(DESTDIR)$(UNITDIR)/qproxy-metrics.socket

clean:
	rm -rf build build-asan build-fuzz

distclean: clean
	rm -rf config.mk config.log config.status configure autom4te.cache \
	    aclocal.m4 install-sh missing compile config.flags

.PHONY: all tests unit integration deps lint check check-asan soak demo \
	bench bench-smoke install uninstall clean distclean fuzz fuzz-build \
	fuzz-replay nomem
