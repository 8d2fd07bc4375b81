"""make install: PREFIX and DESTDIR honoured, an existing config kept."""

import os
import subprocess

from helpers import qproxy_binary

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _install(destdir):
    build = os.path.dirname(qproxy_binary())
    return subprocess.run(["make", "-s", "-C", TOP, "install", "B=%s" % build,
                           "PREFIX=/usr", "DESTDIR=%s" % destdir],
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
    assert "@SBINDIR@" not in unit
    v = subprocess.run([str(daemon), "-v"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("qproxy ")


def test_install_keeps_an_existing_config(tmp_path):
    (tmp_path / "etc").mkdir()
    conf = tmp_path / "etc/qproxy.conf"
    conf.write_text("# the operator's own\n")
    p = _install(tmp_path)
    assert p.returncode == 0, p.stderr
    assert conf.read_text() == "# the operator's own\n"
