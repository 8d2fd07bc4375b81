"""make install: PREFIX and DESTDIR honoured, an existing config kept."""

import os
import shutil
import subprocess

from helpers import qproxy_binary

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _install(destdir, prefix="/usr", extra=()):
    build = os.path.dirname(qproxy_binary())
    return subprocess.run(["make", "-s", "-C", TOP, "install", "B=%s" % build,
                           "PREFIX=%s" % prefix, "DESTDIR=%s" % destdir] + list(extra),
                          capture_output=True, text=True, timeout=300)


def test_install_into_destdir(tmp_path):
    p = _install(tmp_path)
    assert p.returncode == 0, p.stderr
    daemon = tmp_path / "usr/sbin/qproxy"
    assert daemon.is_file() and os.access(daemon, os.X_OK)
    assert (tmp_path / "usr/share/man/man8/qproxy.8").is_file()
    assert (tmp_path / "usr/share/man/man5/qproxy.conf.5").is_file()
    conf = tmp_path / "etc/qproxy.conf"
    with open(os.path.join(TOP, "conf/qproxy.conf")) as f:
        assert conf.read_text() == f.read()
    assert conf.stat().st_mode & 0o077 == 0o040   # group-readable, no more
    unit = (tmp_path / "usr/lib/systemd/system/qproxy.service").read_text()
    assert "ExecStart=/usr/sbin/qproxy -f -c /etc/qproxy.conf\n" in unit
    assert "@SBINDIR@" not in unit and "@SYSCONFDIR@" not in unit, unit
    v = subprocess.run([str(daemon), "-v"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("qproxy ")
    rotate = tmp_path / "etc/logrotate.d/qproxy"
    text = rotate.read_text()
    assert "/usr/sbin/qproxyctl -s /run/qproxy/control.sock reopen\n" in text, text
    assert "@SBINDIR@" not in text and rotate.stat().st_mode & 0o777 == 0o644


def test_install_fills_the_unit_with_this_prefix(tmp_path):
    """The unit's paths come from the PREFIX of this install, not from an
    earlier one's: the unit was made once and kept, and an install with
    another PREFIX shipped a unit that named the first one's binaries."""
    assert _install(tmp_path / "a", prefix="/usr/local").returncode == 0
    p = _install(tmp_path / "b", prefix="/usr")
    assert p.returncode == 0, p.stderr
    unit = (tmp_path / "b/usr/lib/systemd/system/qproxy.service").read_text()
    assert "ExecStart=/usr/sbin/qproxy -f -c /etc/qproxy.conf\n" in unit, unit
    assert "/usr/local" not in unit, unit


def test_install_fills_the_unit_with_this_sysconfdir(tmp_path):
    """SYSCONFDIR moved the configuration, but the unit still read
    /etc/qproxy.conf: the service would not start."""
    p = _install(tmp_path, extra=["SYSCONFDIR=/etc/qproxy-alt"])
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "etc/qproxy-alt/qproxy.conf").is_file()
    unit = (tmp_path / "usr/lib/systemd/system/qproxy.service").read_text()
    assert "ExecStart=/usr/sbin/qproxy -f -c /etc/qproxy-alt/qproxy.conf\n" in unit, unit
    assert "ExecStartPre=/usr/sbin/qproxy -t -c /etc/qproxy-alt/qproxy.conf\n" in unit, unit
    assert "@SBINDIR@" not in unit and "@SYSCONFDIR@" not in unit, unit


def test_install_keeps_an_existing_config(tmp_path):
    (tmp_path / "etc/logrotate.d").mkdir(parents=True)
    conf = tmp_path / "etc/qproxy.conf"
    conf.write_text("# the operator's own\n")
    rotate = tmp_path / "etc/logrotate.d/qproxy"
    rotate.write_text("# rotated weekly here\n")
    p = _install(tmp_path)
    assert p.returncode == 0, p.stderr
    assert conf.read_text() == "# the operator's own\n"
    assert rotate.read_text() == "# rotated weekly here\n"


def test_uninstall_removes_what_install_wrote_but_the_configuration(tmp_path):
    """There was no make uninstall: an operator had to find the nine files.
    It removes all but /etc/qproxy.conf and /etc/logrotate.d/qproxy, which
    are the operator's."""
    assert _install(tmp_path).returncode == 0
    build = os.path.dirname(qproxy_binary())
    p = subprocess.run(["make", "-s", "-C", TOP, "uninstall", "B=%s" % build, "PREFIX=/usr",
                        "DESTDIR=%s" % tmp_path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    left = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if not f.is_dir())
    assert left == ["etc/logrotate.d/qproxy", "etc/qproxy.conf"], left


def test_install_takes_the_directories_configure_was_given(tmp_path):
    """configure's --sbindir, --mandir and --sysconfdir were written to
    config.mk and left unused: make install put everything under PREFIX
    and /etc. Here they are given as configure would have written them."""
    p = _install(tmp_path, extra=["sbindir=/opt/q/bin", "mandir=/opt/q/man",
                                  "sysconfdir=/opt/q/etc"])
    assert p.returncode == 0, p.stderr
    for f in ("opt/q/bin/qproxy", "opt/q/bin/qproxyctl", "opt/q/man/man8/qproxy.8",
              "opt/q/man/man5/qproxy.conf.5", "opt/q/etc/qproxy.conf"):
        assert (tmp_path / f).is_file(), f
    unit = (tmp_path / "usr/lib/systemd/system/qproxy.service").read_text()
    assert "ExecStart=/opt/q/bin/qproxy -f -c /opt/q/etc/qproxy.conf\n" in unit, unit


def test_new_configure_flags_configure_again(tmp_path):
    """make CONFIGURE_FLAGS=--prefix=/usr, README's command for packagers,
    did nothing in a tree configured before: config.mk was remade only when
    configure or its inputs changed, and the package named /usr/local.
    Now flags that differ from the last given configure again; without
    any, configure runs with those it had."""
    tree = tmp_path / "tree"
    files = subprocess.run(["git", "-C", TOP, "ls-files", "-z"], capture_output=True,
                           check=True, timeout=60).stdout.decode().split("\0")
    # the working tree's, as a clone has them, and what autoreconf made of
    # them here (it takes long under load; configure itself runs each time)
    generated = ["configure", "aclocal.m4", "install-sh", "missing", "compile"]
    for f in list(filter(None, files)) + generated:
        if os.path.exists(os.path.join(TOP, f)):
            os.makedirs(tree / os.path.dirname(f), exist_ok=True)
            shutil.copy2(os.path.join(TOP, f), tree / f)

    def prefix(*flags):
        p = subprocess.run(["make", "-s", "-C", str(tree), "config.mk"] + list(flags),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        with open(tree / "config.mk") as f:
            return [l.split("=", 1)[1].strip() for l in f if l.startswith("prefix =")][0]
    assert prefix("CONFIGURE_FLAGS=--prefix=/opt/a") == "/opt/a"
    assert prefix("CONFIGURE_FLAGS=--prefix=/opt/b") == "/opt/b"
    assert prefix() == "/opt/b"
    (tree / "config.mk.in").touch()     # configure again, with its flags
    assert prefix() == "/opt/b"


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path):
    p = _install(tmp_path)
    assert p.returncode == 0, p.stderr
    unit = (tmp_path / "usr/lib/systemd/system/qproxy.service").read_text()
    for line in ("Type=notify", "ExecReload=", "RuntimeDirectory=qproxy",
                 "StateDirectory=qproxy", "LogsDirectory=qproxy\n", "LimitNOFILE=",
                 "WatchdogSec=",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"):
        assert line in unit, line
    # verify wants the programs and the manuals the unit names to exist
    test_unit = tmp_path / "qproxy.service"
    test_unit.write_text(unit.replace("/usr/sbin/", "%s/usr/sbin/" % tmp_path))
    env = dict(os.environ, MANPATH=str(tmp_path / "usr/share/man"))
    v = subprocess.run(["systemd-analyze", "verify", str(test_unit)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
    s = subprocess.run(["systemd-analyze", "security", "--offline=true",
                        str(test_unit)], capture_output=True, text=True,
                       timeout=60)
    level = [l for l in (s.stdout + s.stderr).splitlines()
             if "Overall exposure level" in l]
    assert level, s.stdout + s.stderr
    assert float(level[0].split(":")[1].split()[0]) <= 2.0, level[0]


def test_metrics_socket_units_verify_and_are_sandboxed(tmp_path):
    """qproxy-metrics.socket runs qproxy-metrics@.service for each scrape,
    as the qproxy group, with nothing but a Unix socket to reach."""
    p = _install(tmp_path)
    assert p.returncode == 0, p.stderr
    units = tmp_path / "usr/lib/systemd/system"
    sock = (units / "qproxy-metrics.socket").read_text()
    svc = (units / "qproxy-metrics@.service").read_text()
    assert "Accept=yes" in sock and "ListenStream=127.0.0.1:" in sock
    assert "ExecStart=-/usr/sbin/qproxyctl -s /run/qproxy/control.sock --http metrics" \
        in svc, svc
    for line in ("StandardInput=socket", "Group=qproxy", "RestrictAddressFamilies=AF_UNIX\n",
                 "CapabilityBoundingSet=\n"):
        assert line in svc, line
    d = tmp_path / "verify"
    d.mkdir()
    (d / "qproxy-metrics.socket").write_text(sock)
    (d / "qproxy-metrics@.service").write_text(
        svc.replace("/usr/sbin/", "%s/usr/sbin/" % tmp_path))
    env = dict(os.environ, MANPATH=str(tmp_path / "usr/share/man"))
    v = subprocess.run(["systemd-analyze", "verify", str(d / "qproxy-metrics.socket"),
                        str(d / "qproxy-metrics@.service")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert v.returncode == 0 and v.stdout + v.stderr == "", v.stdout + v.stderr
    s = subprocess.run(["systemd-analyze", "security", "--offline=true",
                        str(d / "qproxy-metrics@.service")], capture_output=True,
                       text=True, timeout=60)
    level = [l for l in (s.stdout + s.stderr).splitlines()
             if "Overall exposure level" in l]
    assert level, s.stdout + s.stderr
    assert float(level[0].split(":")[1].split()[0]) <= 2.0, level[0]


def test_manuals_are_clean():
    pages = [os.path.join(TOP, "man", p) for p in
             ("qproxy.8", "qproxy.conf.5", "qproxyctl.8")]
    m = subprocess.run(["mandoc", "-T", "lint", "-W", "warning"] + pages,
                       capture_output=True, text=True)
    assert m.returncode == 0 and m.stdout == "", m.stdout + m.stderr


def test_no_quotation_opens_inside_another_in_the_manuals():
    """A quoting macro such as Ql takes the rest of its line, another Ql
    too: ".Pq Ql $2b$ , Ql $2y$" showed a quote inside a quote, which mandoc's
    lint does not report."""
    import re
    for page in ("qproxy.8", "qproxy.conf.5", "qproxyctl.8"):
        m = subprocess.run(["mandoc", "-T", "utf8", os.path.join(TOP, "man", page)],
                           capture_output=True, text=True)
        assert m.returncode == 0, m.stderr
        text = re.sub(".\b", "", m.stdout)
        assert text.count("\u2018") > 0, page
        nested = re.findall("\u2018[^\u2019]*\u2018[^\u2019]*", text)
        assert not nested, (page, nested)


def test_every_stats_row_is_documented():
    """qproxyctl(8) names each row of qproxyctl stats (server.c's table),
    in its group's entry."""
    import re
    src = open(os.path.join(TOP, "src/server.c")).read()
    rows = re.findall(r'ROW\("([a-z_]+)", "([a-z_0-9]+)"', src)
    assert len(rows) >= 40, rows
    man = open(os.path.join(TOP, "man/qproxyctl.8")).read()
    entries = re.split(r"(?m)^\.It Sy ", man)
    groups = {e.split("\n", 1)[0].strip(): e for e in entries[1:]}
    for group, name in rows:
        assert group in groups, "group %s has no entry in qproxyctl(8)" % group
        if re.fullmatch(r"[2-4]xx", name):
            name = "5xx"                # "1xx ... to 5xx"
        assert re.search(r"(?m)^\.Sy (?:[a-z_0-9]+ , )*%s\b" % name, groups[group]), \
            "%s %s is not in qproxyctl(8)" % (group, name)


def test_every_config_key_is_documented():
    import re
    src = open(os.path.join(TOP, "src/config.c")).read()
    table = src[src.index("config_keys[] = {"):]
    table = table[:table.index("};")]
    pairs = set(re.findall(r'SECT_([A-Z]+), "([a-z_]+)"', table))
    keys = {k for _, k in pairs}
    assert len(keys) >= 20, keys
    man = open(os.path.join(TOP, "man/qproxy.conf.5")).read()
    conf = open(os.path.join(TOP, "conf/qproxy.conf")).read()
    # each key has an entry of its own (".It Ic key" at a line's start) in
    # its section's part of the manual: the access log's keys are global
    parts = {"GLOBAL": ("The global section", "Listener sections"),
             "LISTENER": ("Listener sections", "Backend sections"),
             "BACKEND": ("Backend sections", "Route sections"),
             "ROUTE": ("Route sections", ".Sh FILES")}
    for sect, k in sorted(pairs):
        if sect not in parts:
            continue
        start, end = parts[sect]
        part = man[man.index(start):man.index(end)]
        assert re.search(r"(?m)^\.It Ic %s Ns =" % k, part), \
            "%s (%s) has no entry in qproxy.conf(5)" % (k, sect.lower())
    for k in sorted(keys):
        assert re.search(r"^[#; ]*%s\s*=" % k, conf, re.M), "%s not in conf/qproxy.conf" % k
