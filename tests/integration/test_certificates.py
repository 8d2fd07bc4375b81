"""A listener with several certificates: each client gets the one whose
names hold the host it asked for (SNI), checked by libcurl against a CA of
the test's own; the first certificate is for every other client. Tickets
resume only under the certificate that issued them."""

import datetime
import json
import os
import subprocess
import time

import pycurl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cdp import Chromium, chromium_binary, spki_hash
from helpers import (SLOW, expected_body, gtlsclient_binary, h3_get, preload_clock,
                     preload_strcmpcount, qproxy_binary, wait_until, write_pem_pair)
from test_ops import qproxyctl, stats


def _openssl(d, *args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True,
                   cwd=d, timeout=60)


def _leaf(d, name, subject, san, key_args, ca="ca"):
    """A certificate named name.pem / name.key, signed by ca (ca.pem and
    ca.key in d); san None makes it a CA. A certificate signed by another
    than the root has its issuer after it in name.pem."""
    _openssl(d, "req", "-newkey", *key_args, "-nodes", "-keyout", name + ".key",
             "-out", name + ".csr", "-subj", subject)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % san if san else "basicConstraints=CA:TRUE\n")
    _openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
             ca + ".key", "-CAcreateserial", "-out", name + ".pem", "-days", "2",
             "-extfile", ext)
    if ca != "ca":
        with open(os.path.join(d, name + ".pem"), "a") as out:
            out.write(open(os.path.join(d, ca + ".pem")).read())
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


EC = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA and leaves it signed: the default one (localhost and 127.0.0.1),
    one for a.test (RSA, where the default is EC: the key type changes with
    the certificate), one for any name under b.test (by an intermediate
    that the client must be sent with it), and one that names a host only
    in its common name, where clients no longer look."""
    d = str(tmp_path_factory.mktemp("certs"))
    _openssl(d, "req", "-x509", "-newkey", *EC, "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=qproxy test CA")
    _leaf(d, "int", "/CN=qproxy test intermediate", None, EC)
    return {
        "ca": os.path.join(d, "ca.pem"),
        "default": _leaf(d, "default", "/CN=localhost", "DNS:localhost,IP:127.0.0.1", EC),
        "a": _leaf(d, "a", "/CN=a.test", "DNS:a.test,DNS:www.a.test", ["rsa:2048"]),
        "b": _leaf(d, "b", "/CN=b.test", "DNS:*.b.test", EC, ca="int"),
        "anon": _leaf(d, "anon", "/CN=anon.test", "email:anon@example.com", EC),
    }


def _pairs(*leaves):
    items = []
    for cert, key in leaves:
        items += [("certificate", cert), ("private_key", key)]
    return items


def _sections(backend, leaves, early="off", secret=None):
    def build(port, cert, key):
        glob = [("log_level", "debug")]
        if secret:
            glob.append(("secret_file", secret))
        return [("global", glob),
                ("listener main", [("address", "127.0.0.1:%d" % port)] + _pairs(*leaves) +
                 [("early_data", early)]),
                ("backend app", [("server", backend)]),
                ("route app", [("path_prefix", "/app/"), ("backend", "app")])]
    return build


def _verified_get(q, certs, host, path="/app/bytes/10"):
    """GET https://host:port/path, host resolved to 127.0.0.1, the
    certificate checked against the CA and the host name."""
    url = "https://%s:%d%s" % (host, q.port, path)
    resolve = [] if host == "127.0.0.1" else ["%s:%d:127.0.0.1" % (host, q.port)]
    return h3_get(url, resolve=resolve, verify=True, cainfo=certs["ca"])


def test_each_host_gets_its_own_certificate(qproxy_factory, backend_app, certs):
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [
        certs["default"], certs["a"], certs["b"]]))
    for host in ("a.test", "www.a.test", "x.b.test", "A.Test"):
        r = _verified_get(q, certs, host)
        assert r.status == 200 and r.body == expected_body(10), host
    # no name sent (curl sends none for an address): the first certificate
    r = _verified_get(q, certs, "127.0.0.1")
    assert r.status == 200
    # a name none of them holds gets the first too, which libcurl refuses
    # for it; so do names the wildcard does not cover
    for host in ("c.test", "b.test", "x.y.b.test"):
        with pytest.raises(pycurl.error) as e:
            _verified_get(q, certs, host)
        assert e.value.args[0] in (pycurl.E_PEER_FAILED_VERIFICATION,
                                   pycurl.E_SSL_CONNECT_ERROR), (host, e.value)


def test_without_more_certificates_every_host_gets_the_first(qproxy_factory, backend_app,
                                                            certs):
    """The control: the same clients, a listener of one certificate."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [certs["default"]]))
    assert _verified_get(q, certs, "localhost").status == 200
    with pytest.raises(pycurl.error):
        _verified_get(q, certs, "a.test")


def test_a_certificate_after_the_first_must_name_a_host(tmp_path, certs, backend_app):
    """It could never be chosen: refused, at its own line, by -t."""
    conf = tmp_path / "q.conf"
    conf.write_text("[listener main]\naddress = 127.0.0.1:4433\n"
                    "certificate = %s\nprivate_key = %s\n"
                    "certificate = %s\nprivate_key = %s\n"
                    "[backend app]\nserver = %s\n[route all]\nbackend = app\n"
                    % (certs["default"] + certs["anon"] + (backend_app.tcp_server,)))
    p = subprocess.run([qproxy_binary(), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "%s:5: listener main: certificate %s names no host" % (conf, certs["anon"][0]) \
        in p.stderr, p.stderr
    # first, it may: a client that names no host still gets it
    conf.write_text(conf.read_text().replace(
        "certificate = %s\nprivate_key = %s\ncertificate = %s\nprivate_key = %s\n"
        % (certs["default"] + certs["anon"]),
        "certificate = %s\nprivate_key = %s\ncertificate = %s\nprivate_key = %s\n"
        % (certs["anon"] + certs["default"])))
    p = subprocess.run([qproxy_binary(), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_reload_adds_a_certificate(qproxy_factory, backend_app, certs):
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [certs["default"]]))
    with pytest.raises(pycurl.error):
        _verified_get(q, certs, "x.b.test")
    conf = open(q.conf).read()
    extra = "certificate = %s\nprivate_key = %s\n" % certs["b"]
    with open(q.conf, "w") as f:
        f.write(conf.replace("early_data = off\n", "early_data = off\n" + extra, 1))
    # made for 2 days, each expires within 14
    assert stats(q)["tls"]["certificates_expiring"] == 1
    assert qproxyctl(q, "reload").returncode == 0
    assert _verified_get(q, certs, "x.b.test").status == 200
    assert stats(q)["tls"]["certificates_expiring"] == 2
    # a pair whose key is not the certificate's is refused at its line,
    # and the running configuration keeps serving
    bad = "certificate = %s\nprivate_key = %s\n" % (certs["a"][0], certs["b"][1])
    text = open(q.conf).read()
    with open(q.conf, "w") as f:
        f.write(text.replace(extra, extra + bad, 1))
    line = text.replace(extra, extra + bad, 1).splitlines().index(
        "certificate = %s" % certs["a"][0]) + 1
    p = qproxyctl(q, "reload")
    assert p.returncode == 1
    assert "%s:%d: listener main: private key %s does not match certificate %s" % (
        q.conf, line, certs["b"][1], certs["a"][0]) in p.stderr, p.stderr
    assert _verified_get(q, certs, "x.b.test").status == 200
    with pytest.raises(pycurl.error):
        _verified_get(q, certs, "a.test")
    assert stats(q)["tls"]["certificates_expiring"] == 2


def _gtls(q, outdir, path, *extra):
    """gtlsclient, which sends "localhost" as its server name."""
    return subprocess.run([gtlsclient_binary(), "-q", "--exit-on-all-streams-close",
                           "--download=%s" % outdir, "--timeout=10s"] + list(extra) +
                          ["127.0.0.1", str(q.port), "https://localhost:%d%s" % (q.port, path)],
                          capture_output=True, timeout=60)


def test_a_ticket_resumes_only_under_its_own_certificate(qproxy_factory, backend_app,
                                                         certs, tmp_path):
    """A session resumed, with early data and no certificate, where the
    client's name now gets another certificate would skip that
    certificate: it resumes nothing. (gtlsclient always names localhost:
    a reload gives that name another certificate.)"""
    loc = [_leaf(os.path.dirname(certs["ca"]), "loc%d" % i, "/CN=localhost",
                 "DNS:localhost", EC) for i in (1, 2)]
    secret = str(tmp_path / "secret")
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [
        certs["a"], loc[0]], early="on", secret=secret))
    sess, tp = tmp_path / "session", tmp_path / "tp"
    resume = ["--session-file=%s" % sess, "--tp-file=%s" % tp]
    _gtls(q, tmp_path, "/app/bytes/1", *resume, "--wait-for-ticket")
    assert sess.exists() and tp.exists(), "no session ticket came"
    # the control: the same certificates after a reload, resumed
    assert qproxyctl(q, "reload").returncode == 0
    p = _gtls(q, tmp_path, "/app/bytes/2", *resume)
    assert (tmp_path / "2").read_bytes() == expected_body(2), p
    assert stats(q)["quic"]["early_data_requests"] == 1
    _gtls(q, tmp_path, "/app/bytes/3", *resume, "--wait-for-ticket")
    # localhost's certificate changes: that ticket resumes nothing
    conf = open(q.conf).read()
    with open(q.conf, "w") as f:
        f.write(conf.replace(loc[0][0], loc[1][0]).replace(loc[0][1], loc[1][1]))
    assert qproxyctl(q, "reload").returncode == 0
    before = stats(q)["quic"]["early_data_requests"]
    p = _gtls(q, tmp_path, "/app/bytes/4", *resume, "--wait-for-ticket")
    assert (tmp_path / "4").read_bytes() == expected_body(4), p
    assert stats(q)["quic"]["early_data_requests"] == before
    # and the ticket that connection got resumes
    p = _gtls(q, tmp_path, "/app/bytes/5", *resume)
    assert (tmp_path / "5").read_bytes() == expected_body(5), p
    assert stats(q)["quic"]["early_data_requests"] == before + 1


def _dated_certificate(d, name, not_before, not_after):
    """A self-signed EC certificate for name.test valid between the two
    datetimes: name.pem, name.key in d."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name + ".test")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name + ".test")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return write_pem_pair(d, name, cert, key)


def test_qproxyctl_tls_shows_each_certificate(qproxy_factory, backend_app, certs):
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [
        certs["default"], certs["a"], certs["b"]]))
    t0 = time.time()
    p = qproxyctl(q, "tls", "--json")
    t1 = time.time()
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)["certificates"]
    assert [(c["listener"], c["file"], c["default"], c["names"]) for c in got] == [
        ("main", certs["default"][0], True, ["localhost"]),
        ("main", certs["a"][0], False, ["a.test", "www.a.test"]),
        ("main", certs["b"][0], False, ["*.b.test"])]
    for c, which in zip(got, ("default", "a", "b")):
        with open(certs[which][0], "rb") as f:
            leaf = x509.load_pem_x509_certificate(f.read())
        assert c["not_after"] == leaf.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"), c
        assert c["not_before"] == leaf.not_valid_before.strftime("%Y-%m-%dT%H:%M:%SZ"), c
        # whole days left: made for 2, so 1, or 2 within their first
        # second. The slack is for the wall clock: once, in a CI run,
        # qproxy's reading came out more than a second before t0 (a clock
        # stepped back, most likely)
        end = leaf.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
        assert c["days_left"] in {int((end - t) // 86400) for t in (t0 - 60, t1 + 60)}, c
    p = qproxyctl(q, "tls")
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["LISTENER", "NOT_AFTER", "DAYS", "CERTIFICATE", "NAMES"], p.stdout
    assert lines[2].split()[3:] == [certs["a"][0], "a.test", "www.a.test"], p.stdout
    assert len(lines) == 4, p.stdout


def test_certificates_near_or_past_their_dates_are_warned_about(
        qproxy_factory, backend_app, certificate, tmp_path):
    """By -t and in the log at a start, each at its line; a certificate
    with 30 days left is no news."""
    now = datetime.datetime.utcnow().replace(microsecond=0)
    day = datetime.timedelta(days=1)
    old = _dated_certificate(str(tmp_path), "old", now - 10 * day, now - day)
    soon = _dated_certificate(str(tmp_path), "soon", now - day,
                              now + 3 * day + datetime.timedelta(hours=2))
    later = _dated_certificate(str(tmp_path), "later", now + day, now + 90 * day)
    conf = tmp_path / "q.conf"
    leaves = [certificate, old, soon, later]
    conf.write_text("[listener main]\naddress = 127.0.0.1:4433\n" +
                    "".join("certificate = %s\nprivate_key = %s\n" % c for c in leaves) +
                    "[backend app]\nserver = %s\n[route all]\nbackend = app\n"
                    % backend_app.tcp_server)
    p = subprocess.run([qproxy_binary(), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    expect = [
        "%s:5: listener main: certificate %s expired at %s" % (
            conf, old[0], (now - day).strftime("%Y-%m-%dT%H:%M:%SZ")),
        "%s:7: listener main: certificate %s expires at %s, in 3 days" % (
            conf, soon[0], (now + 3 * day + datetime.timedelta(hours=2)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")),
        "%s:9: listener main: certificate %s is not valid before %s" % (
            conf, later[0], (now + day).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]
    warned = [x for x in p.stderr.splitlines() if "certificate" in x]
    assert [w.split("qproxy[warn]: ", 1)[-1] for w in warned] == expect, p.stderr
    # the daemon says the same where its log goes
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, leaves))
    text = open(q.log).read()
    for e in expect:
        assert e.split(": listener", 1)[1] in text, text


def _around_an_edge(d, now, edge):
    """Three certificates about edge, in d: "short", valid from a day
    before now until edge; "future", from edge for 90 days; "later", from
    a day before now until 5 days after."""
    day = datetime.timedelta(days=1)
    return [_dated_certificate(d, "short", now - day, edge),
            _dated_certificate(d, "future", edge, now + 90 * day),
            _dated_certificate(d, "later", now - day, now + 5 * day)]


def test_certificates_are_watched_while_the_daemon_runs(
        qproxy_factory, backend_app, certificate, tmp_path):
    """qproxyctl stats counts the certificates expiring within 14 days and
    those not valid, and the counts change as the clock passes a
    certificate's dates, with the log saying so then, not only at the
    start: one expires 3 s after it, another becomes valid then."""
    now = datetime.datetime.utcnow().replace(microsecond=0)
    edge = now + datetime.timedelta(seconds=3)
    short, future, later = _around_an_edge(str(tmp_path), now, edge)
    q = qproxy_factory(sections=_sections(backend_app.tcp_server,
                                          [certificate, short, future, later]))
    tls = stats(q)["tls"]
    assert time.time() < edge.replace(tzinfo=datetime.timezone.utc).timestamp(), \
        "too slow a start to see the certificates' first state"
    assert tls == {"certificates_expiring": 2, "certificates_not_valid": 1,
                   "crls_expiring": 0, "crls_out_of_date": 0}, tls
    expired = "certificate %s expired at %s" % (short[0],
                                                 edge.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert expired not in open(q.log).read()
    wait_until(lambda: stats(q)["tls"] == {"certificates_expiring": 1,
                                           "certificates_not_valid": 1,
                                           "crls_expiring": 0, "crls_out_of_date": 0},
               "the counts after the certificates' dates", 10 * SLOW)
    wait_until(lambda: expired in open(q.log).read(), "the log's word of it", 5)
    # and it still serves
    assert h3_get(q.url("/app/bytes/10")).status == 200


def test_certificates_are_watched_across_a_step_of_the_wall_clock(
        qproxy_factory, backend_app, certificate, tmp_path):
    """A certificate's dates are times of the wall clock, and the watch
    waited for the next one on a timer, which counts the time that passes
    (the monotonic clock): once the wall clock stepped (an NTP correction,
    or a VM resumed after a day off, where the monotonic clock stood
    still), qproxyctl stats and the log said so only as late as the step,
    up to a day. Here qproxy's clock steps 3 hours ahead, past the dates
    of two certificates 2 hours away: the counts change at once."""
    now = datetime.datetime.utcnow().replace(microsecond=0)
    edge = now + datetime.timedelta(hours=2)
    short, future, later = _around_an_edge(str(tmp_path), now, edge)
    q = qproxy_factory(sections=_sections(backend_app.tcp_server,
                                          [certificate, short, future, later]), start=False)
    clock = preload_clock(q, str(tmp_path / "clock"))
    q.start()
    tls = stats(q)["tls"]
    assert tls == {"certificates_expiring": 2, "certificates_not_valid": 1,
                   "crls_expiring": 0, "crls_out_of_date": 0}, tls
    clock(3 * 3600)
    wait_until(lambda: stats(q)["tls"] == {"certificates_expiring": 1,
                                           "certificates_not_valid": 1,
                                           "crls_expiring": 0, "crls_out_of_date": 0},
               "the counts after the certificates' dates", 5 * SLOW)
    expired = "certificate %s expired at %s" % (short[0],
                                                 edge.strftime("%Y-%m-%dT%H:%M:%SZ"))
    wait_until(lambda: expired in open(q.log).read(), "the log's word of it", 5)
    assert h3_get(q.url("/app/bytes/10")).status == 200


def _chromium(q, hosts, trusted):
    """A headless Chromium that speaks HTTP/3 to q for each of hosts, which
    it resolves to 127.0.0.1, and takes the certificates with the keys of
    trusted, whatever names they hold."""
    if not chromium_binary():
        pytest.fail("chromium is not installed (make deps installs it)", pytrace=False)
    c = Chromium(",".join("%s:%d" % (h, q.port) for h in hosts),
                 ",".join(spki_hash(t) for t in trusted), timeout=30 * SLOW,
                 extra_args=["--host-resolver-rules=" +
                             ", ".join("MAP %s 127.0.0.1" % h for h in hosts)])
    c.start()
    return c


def test_chromium_gets_each_host_its_certificate(qproxy_factory, backend_app, certs):
    """A browser that trusts only the keys of a.test's and b.test's
    certificates, not the first one's, loads a page from each host; one
    from a host no certificate names, which gets the first, fails (Chromium
    calls it ERR_QUIC_PROTOCOL_ERROR), and loads once that key is trusted
    too."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [
        certs["default"], certs["a"], certs["b"]]))
    hosts = ["a.test", "x.b.test", "c.test"]
    c = _chromium(q, hosts, [certs["a"][0], certs["b"][0]])
    try:
        for h in hosts[:2]:
            r = c.navigate("https://%s:%d/app/status/200" % (h, q.port))
            assert not r.get("errorText"), (h, r, c.stderr_tail())
            assert c.evaluate("performance.getEntriesByType('navigation')[0]"
                              ".nextHopProtocol") == "h3", h
        r = c.navigate("https://c.test:%d/app/status/200" % q.port)
        assert r.get("errorText"), r
    finally:
        c.close()
    c = _chromium(q, hosts[2:], [certs["default"][0]])
    try:
        r = c.navigate("https://c.test:%d/app/status/200" % q.port)
        assert not r.get("errorText"), (r, c.stderr_tail())
    finally:
        c.close()


def _get_as(q, certs, host, authority):
    """libcurl connects to host (its name sent, the certificate checked for
    it), then asks for authority: the Host header it is given becomes the
    request's :authority."""
    url = "https://%s:%d/app/bytes/10" % (host, q.port)
    resolve = [] if host == "127.0.0.1" else ["%s:%d:127.0.0.1" % (host, q.port)]
    return h3_get(url, resolve=resolve, verify=True, cainfo=certs["ca"],
                  headers=["Host: %s:%d" % (authority, q.port)])


def test_a_host_of_another_certificate_is_misdirected(qproxy_factory, backend_app, certs):
    """A request on a connection whose certificate does not cover its
    host, where another of the listener's certificates does, gets 421
    (RFC 9110 15.5.20) and never reaches a backend: the client must open a
    connection to that host and check its certificate (RFC 9114 3.3).
    Hosts the connection's certificate covers, and hosts no certificate
    names, are served."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [
        certs["default"], certs["a"], certs["b"]]))
    for host, authority in (("a.test", "x.b.test"), ("x.b.test", "A.TEST"),
                            ("127.0.0.1", "www.a.test"), ("localhost", "y.b.test")):
        r = _get_as(q, certs, host, authority)
        assert r.status == 421 and r.body == b"421 Misdirected Request\n", \
            (host, authority, r.status)
    st = stats(q)
    assert st["requests"]["misdirected"] == 4, st["requests"]
    assert st["upstream"]["connects"] == 0, st["upstream"]
    for host, authority in (("a.test", "www.a.test"), ("a.test", "c.test"),
                            ("x.b.test", "z.b.test"), ("a.test", "127.0.0.1"),
                            ("x.b.test", "x.y.b.test")):
        r = _get_as(q, certs, host, authority)
        assert r.status == 200 and r.body == expected_body(10), (host, authority)
    assert stats(q)["requests"]["misdirected"] == 4


def test_one_certificate_serves_every_host(qproxy_factory, backend_app, certs):
    """The control: a listener of one certificate has no other connection
    to send a client to."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [certs["default"]]))
    r = _get_as(q, certs, "localhost", "a.test")
    assert r.status == 200 and r.body == expected_body(10)
    assert stats(q)["requests"]["misdirected"] == 0


def test_chromium_reuses_a_connection_for_a_host_its_certificate_covers(
        qproxy_factory, backend_app, certs, tmp_path):
    """Chromium pools connections: a host at the same address that the
    certificate it has already checked covers goes on the same connection
    (RFC 9114 3.3). Here www.a.test also has a certificate of its own,
    listed first, which a new connection to it would get; the reused one
    must still be served, not sent away with a 421."""
    d = str(tmp_path)
    for f in ("ca.pem", "ca.key"):
        os.symlink(os.path.join(os.path.dirname(certs["ca"]), f), os.path.join(d, f))
    www = _leaf(d, "www", "/CN=www.a.test", "DNS:www.a.test", EC)
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [
        certs["default"], www, certs["a"]]))
    c = _chromium(q, ["a.test", "www.a.test"], [certs["a"][0], www[0]])
    try:
        for h in ("a.test", "www.a.test"):
            r = c.navigate("https://%s:%d/app/status/200" % (h, q.port))
            assert not r.get("errorText"), (h, r, c.stderr_tail())
            assert c.evaluate("performance.getEntriesByType('navigation')[0]"
                              ".nextHopProtocol") == "h3", h
            if h == "a.test":
                first = stats(q)["connections"]["total"]
        st = stats(q)
        conns = json.loads(qproxyctl(q, "conns", "--json").stdout)["connections"]
    finally:
        c.close()
    # Chromium opened its connections for a.test (two, here) and no more
    assert st["connections"]["total"] == first, st["connections"]
    assert [x["sni"] for x in conns] == ["a.test"] * len(conns), conns
    assert st["requests"]["misdirected"] == 0, st["requests"]
    assert st["requests"]["2xx"] >= 2, st["requests"]


def _check(conf, roots=None):
    """qproxy -t; roots, when given, stands for this machine's trusted
    roots (SSL_CERT_FILE), so that the test CA's chains are complete."""
    env = dict(os.environ)
    if roots:
        env["SSL_CERT_FILE"] = roots
    return subprocess.run([qproxy_binary(), "-t", "-c", str(conf)], capture_output=True,
                          text=True, timeout=30, env=env)


def _listener_conf(conf, leaves, backend):
    """A configuration of one listener with these (certificate, key)
    pairs, from line 3 on: the nth pair's (from 0) certificate at line
    3 + 2n, its key at 4 + 2n."""
    conf.write_text("[listener main]\naddress = 127.0.0.1:4433\n" +
                    "".join("certificate = %s\nprivate_key = %s\n" % c for c in leaves) +
                    "[backend app]\nserver = %s\n[route all]\nbackend = app\n" % backend)


def test_the_roots_are_read_once_and_again_when_they_change(tmp_path, certs, backend_app,
                                                           qproxy_factory, monkeypatch):
    """The chain check looks for a chain's last issuer among this
    machine's roots (SSL_CERT_FILE here). The roots file, about 150
    certificates, was read and parsed for every certificate of every
    listener at every start and reload: 2 ms each, seconds for a listener
    of a thousand names. Now once, and again at a reload only when the
    file changed, which is then seen: the chains the new roots complete
    are no longer warned about."""
    d = str(tmp_path)
    _openssl(d, "req", "-x509", "-newkey", *EC, "-nodes", "-keyout", "other.key",
             "-out", "other.pem", "-days", "2", "-subj", "/CN=another root")
    roots = os.path.join(d, "roots.pem")
    with open(roots, "w") as f:
        f.write(open(os.path.join(d, "other.pem")).read())
    monkeypatch.setenv("SSL_CERT_FILE", roots)
    q = qproxy_factory(sections=_sections(backend_app.tcp_server,
                                          [certs["default"], certs["b"], certs["a"]]))

    def said():
        text = open(q.log).read()
        return (text.count("roots: 1 certificate read from %s" % roots),
                text.count("roots: 2 certificates read from %s" % roots),
                text.count("the chain ends at a certificate"))

    # three chains that end at the test CA, which the roots lack: one read
    assert said() == (1, 0, 3), said()
    # the same roots: not read again
    assert qproxyctl(q, "reload").returncode == 0
    assert said() == (1, 0, 6), said()
    # the test CA among them now: read again, and no chain is short
    with open(roots, "a") as f:
        f.write(open(certs["ca"]).read())
    assert qproxyctl(q, "reload").returncode == 0
    assert said() == (1, 1, 6), said()


def test_a_private_key_that_cannot_be_used_is_refused_at_its_own_line(
        tmp_path, certs, backend_app):
    """A key file that holds no key qproxy can take (here one encrypted
    with a passphrase, as certbot or a CA's portal may hand out, or a
    certificate) was refused at its certificate's line, one line off: a
    configuration error points at the key at fault (qproxy.conf(5),
    DIAGNOSTICS), as "cannot open" does for a key file that is missing
    (found by helper-64).
    A key that does not match its certificate is the pair's fault, and
    stays at the certificate's line."""
    d = str(tmp_path)
    _openssl(d, "pkey", "-in", certs["a"][1], "-aes256", "-passout", "pass:secret",
             "-out", "enc.key")
    os.chmod(os.path.join(d, "enc.key"), 0o600)
    conf = tmp_path / "q.conf"
    for key, why in ((os.path.join(d, "enc.key"), "no unencrypted PEM private key in it"),
                     (certs["a"][0], "no unencrypted PEM private key in it")):
        _listener_conf(conf, [certs["default"], (certs["a"][0], key)],
                       backend_app.tcp_server)
        p = _check(conf)
        assert p.returncode == 1, p
        assert "%s:6: listener main: private key %s: %s" % (conf, key, why) in p.stderr, \
            p.stderr
    # missing: at the key's line already
    _listener_conf(conf, [certs["default"], (certs["a"][0], d + "/none.key")],
                   backend_app.tcp_server)
    assert "%s:6: private_key: cannot open" % conf in _check(conf).stderr


def test_a_chain_in_the_wrong_order_is_called_so(tmp_path, certs, backend_app):
    """qproxy.conf(5): the chain, the server's own certificate first. A
    file with the intermediate first (as some CAs ship the bundle, and
    cat in the wrong order makes) was refused with "private key ... does
    not match certificate ...": true of its first certificate, but it
    sends the operator looking for another key. The key is that of a
    later certificate in the file: say the order is wrong (found by
    helper-64)."""
    d = os.path.dirname(certs["ca"])
    leaf = open(os.path.join(d, "b.pem")).read()
    first = leaf.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")
    wrong = tmp_path / "b-chain.pem"
    wrong.write_text(leaf[first:] + leaf[:first])
    conf = tmp_path / "q.conf"
    _listener_conf(conf, [(str(wrong), certs["b"][1])], backend_app.tcp_server)
    p = _check(conf)
    assert p.returncode == 1, p
    said = [l for l in p.stderr.splitlines() if l.startswith("%s:3: listener main: " % conf)]
    assert len(said) == 1 and str(wrong) in said[0], p.stderr
    words = said[0].replace(str(conf), "").replace(str(wrong), "").replace(certs["b"][1], "")
    assert "order" in words, p.stderr


def test_a_certificate_no_client_can_get_is_warned_about(tmp_path, certs, backend_app):
    """A certificate is chosen by the first certificate whose names hold
    the client's host, and the common name does not count; so one whose
    every name an earlier certificate holds too is never sent to anyone.
    The usual case is a pair of certificates for one name, an ECDSA and an
    RSA one, as nginx and others serve by what each client supports: the
    second was taken without a word and never served. qproxy -t refuses a
    later certificate that names no host, since it could never be chosen
    (test_a_certificate_after_the_first_must_name_a_host), and warns of a
    route that the routes before it hide; this one was no news at all. It
    should be warned about at its line (the file is still good); one that
    adds a name of its own is no news (found by helper-64)."""
    d = os.path.dirname(certs["ca"])
    rsa = _leaf(d, "a-rsa", "/CN=a.test", "DNS:a.test,DNS:www.a.test", ["rsa:2048"])
    ec_a = _leaf(d, "a-ec", "/CN=a.test", "DNS:www.a.test,DNS:a.test", EC)
    more = _leaf(d, "a-more", "/CN=a.test", "DNS:a.test,DNS:new.a.test", EC)
    conf = tmp_path / "q.conf"
    _listener_conf(conf, [certs["default"], rsa, ec_a, more], backend_app.tcp_server)
    p = _check(conf, roots=certs["ca"])
    assert p.returncode == 0 and "configuration OK" in p.stdout, p
    # (each is made for 2 days: each is warned of as expiring soon)
    said = [l for l in p.stderr.splitlines() if " expires at " not in l]
    shadowed = [l for l in said if ec_a[0] in l]
    assert len(shadowed) == 1 and ("%s:7: " % conf) in shadowed[0], p.stderr
    assert not [l for l in said if more[0] in l or rsa[0] in l], p.stderr


def test_a_chain_that_lacks_an_intermediate_is_warned_about(tmp_path, certs, backend_app,
                                                             qproxy_factory):
    """The usual mistake with a CA's files (certbot's cert.pem for its
    fullchain.pem): the server's certificate alone. curl, and every
    client but a browser that has met the intermediate before, refuses
    it, while a check with a browser passes. qproxy -t and the log at a
    start say so at the certificate's line, naming the issuer that is
    neither in the file nor among this machine's roots (SSL_CERT_FILE
    stands for them here, as it does for OpenSSL); a file that goes on to
    such a root, or to one signed by itself, is no news."""
    d = str(tmp_path)
    alone, key = certs["b"][0] + ".alone", certs["b"][1]
    with open(certs["b"][0]) as f:
        pem = f.read()
    with open(alone, "w") as f:
        f.write(pem[:pem.index("-----END CERTIFICATE-----") + 26])
    full = os.path.join(d, "full.pem")
    with open(full, "w") as f:
        f.write(pem + open(certs["ca"]).read())
    conf = tmp_path / "q.conf"

    def chain_warnings(leaves, roots):
        _listener_conf(conf, leaves, backend_app.tcp_server)
        p = _check(conf, roots=roots)
        assert p.returncode == 0 and "configuration OK" in p.stdout, p
        return [l.split("qproxy[warn]: ", 1)[-1] for l in p.stderr.splitlines()
                if "the chain ends" in l]

    # the intermediate left out: named
    said = chain_warnings([certs["default"], (alone, key)], certs["ca"])
    assert len(said) == 1 and said[0].startswith(
        "%s:5: listener main: certificate %s: the chain ends at a certificate "
        'signed by "/CN=qproxy test intermediate"' % (conf, alone)), said
    # no roots to look in: nothing can be said
    assert chain_warnings([(alone, key)], os.path.join(d, "none.pem")) == []
    # the intermediate there, the root among the roots: complete
    assert chain_warnings([certs["default"], certs["b"]], certs["ca"]) == []
    # the root not among them: the chain ends at one nobody vouches for
    other = os.path.join(d, "other.pem")
    _openssl(d, "req", "-x509", "-newkey", *EC, "-nodes", "-keyout", "other.key",
             "-out", "other.pem", "-days", "2", "-subj", "/CN=another root")
    said = chain_warnings([certs["default"], certs["b"]], other)
    assert len(said) == 2 and all('signed by "/CN=qproxy test CA", which neither the '
                                  "file nor the roots in %s hold" % other in l
                                  for l in said), said
    # a file that goes on to the root itself, or a self-signed certificate
    assert chain_warnings([(full, key)], other) == []
    # the daemon's log says it too, at a start (the machine's roots:
    # the test CA is not among them)
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, [(alone, key)]))
    assert ('certificate %s: the chain ends at a certificate signed by '
            '"/CN=qproxy test intermediate"' % alone) in open(q.log).read()


def _signed_leaves(d, names_of, ca):
    """Certificates signed by the test's CA, one a list of DNS names of
    names_of, as i.pem and i.key in d; the pairs, in that order."""
    with open(ca + ".key", "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(ca + ".pem", "rb") as f:
        issuer = x509.load_pem_x509_certificate(f.read()).subject
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    kpem = os.path.join(d, "leaf.key")
    with open(os.open(kpem, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pairs = []
    for i, names in enumerate(names_of):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in names]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = os.path.join(d, "%d.pem" % i)
        with open(pem, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        pairs.append((pem, kpem))
    return pairs


def test_many_certificates_are_looked_up_not_walked(qproxy_factory, backend_app, certs,
                                                     tmp_path):
    """A listener of 2,000 certificates (two names each, a wildcard for
    every hundredth, and one with the names of an earlier one): each
    client gets the one for its host, a wildcard when no name is its
    own, the first when none covers it; the one whose names an earlier
    one has is warned of; a request for another certificate's host on
    a connection is answered 421. The certificates are found by their
    names, not by a walk of them all for each handshake and each
    certificate: strcmpcount.c counts qproxy's calls to strcmp. With the
    walks, a start and these handshakes made about 4 million; now about
    84,000."""
    n = 2000
    names_of = [["site%d.test" % i, "www.site%d.test" % i] +
                (["*.w%d.test" % i] if i % 100 == 0 else []) for i in range(1, n + 1)]
    names_of.append(["www.site7.test", "site7.test"])
    leaves = _signed_leaves(str(tmp_path), names_of, certs["ca"][:-len(".pem")])
    q = qproxy_factory(sections=_sections(backend_app.tcp_server,
                                          [certs["default"]] + leaves), start=False)
    count = str(tmp_path / "strcmp.count")
    preload_strcmpcount(q, count)
    q.start()
    for host in ("site%d.test" % n, "www.site1.test", "x.w1900.test", "site7.test",
                 "localhost"):
        r = _verified_get(q, certs, host)
        assert r.status == 200 and r.body == expected_body(10), host
    # the first certificate, which is not for it
    with pytest.raises(pycurl.error):
        _verified_get(q, certs, "x.y.w1900.test")
    said = [l for l in q.log_text().splitlines() if "is never sent" in l]
    assert len(said) == 1 and leaves[-1][0] in said[0], said
    # a connection of site1's certificate asked for site2's host
    url = "https://site1.test:%d/app/bytes/10" % q.port
    r = h3_get(url, resolve=["site1.test:%d:127.0.0.1" % q.port], verify=True,
               cainfo=certs["ca"], headers=["Host: site2.test"])
    assert r.status == 421, r
    q.stop()
    with open(count) as f:
        calls = int(f.read())
    assert calls < 1000 * 1000, calls
