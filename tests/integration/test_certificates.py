"""A listener with several certificates: each client gets the one whose
names hold the host it asked for (SNI), checked by libcurl against a CA of
the test's own; the first certificate is for every other client. Tickets
resume only under the certificate that issued them."""

import os
import subprocess

import pycurl
import pytest

from helpers import expected_body, gtlsclient_binary, h3_get, qproxy_binary
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
    assert qproxyctl(q, "reload").returncode == 0
    assert _verified_get(q, certs, "x.b.test").status == 200
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
