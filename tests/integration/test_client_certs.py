"""Client certificates (a listener's client_ca): libcurl, which presents
one when the server asks, is served only with a certificate the CA issued,
and the backend is told which one in client_cert_header, a field no client
can send in its place. Such a listener resumes no session."""

import datetime
import hashlib
import json
import os
import subprocess

import pycurl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import (expected_body, gtlsclient_binary, h3_request, make_easy, preload_clock,
                     qproxy_binary, wait_until, write_pem_pair)
from test_ops import qproxyctl, stats


def _name(*pairs):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _ca(d, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name((NameOID.COMMON_NAME, name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem, kpem = write_pem_pair(d, name, cert, key)
    return {"pem": pem, "cert": cert, "key": key}


def _crl(path, ca, revoked=(), days=(-1, 1)):
    """A CRL of ca listing the certificates (DER) revoked, in force from
    days[0] to days[1] from now, written to path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca["cert"].subject)
         .last_update(now + datetime.timedelta(days=days[0]))
         .next_update(now + datetime.timedelta(days=days[1])))
    for der in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(x509.load_der_x509_certificate(der).serial_number)
            .revocation_date(now - datetime.timedelta(hours=1)).build())
    with open(path, "wb") as f:
        f.write(b.sign(ca["key"], hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return str(path)


def _client(d, name, ca, subject, days=(-1, 2)):
    """A client certificate of ca: (pem, key, DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(ca["cert"].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca["key"], hashes.SHA256()))
    pem, kpem = write_pem_pair(d, name, cert, key)
    return pem, kpem, cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The CA clients are checked against, another CA, and clients of each;
    one of the first whose validity ended yesterday."""
    d = str(tmp_path_factory.mktemp("pki"))
    ca, other = _ca(d, "client CA"), _ca(d, "other CA")
    both = os.path.join(d, "both.pem")
    with open(both, "w") as f:
        f.write(open(ca["pem"]).read() + open(other["pem"]).read())
    return {
        "ca": ca["pem"], "ca_key": ca, "other_key": other, "both": both,
        "alice": _client(d, "alice", ca, _name((NameOID.ORGANIZATION_NAME, 'Acme "Q"\\'),
                                               (NameOID.COMMON_NAME, "alice"))),
        "bob": _client(d, "bob", ca, _name((NameOID.COMMON_NAME, "bob"))),
        "expired": _client(d, "expired", ca, _name((NameOID.COMMON_NAME, "old")),
                           days=(-3, -1)),
        "stranger": _client(d, "stranger", other, _name((NameOID.COMMON_NAME, "alice"))),
    }


def _sections(backend, ca=None, verify=None, header=None, early=None, extra_listener=False,
              route_set=None, access_log=None, crl=None, extra_header=None):
    def build(port, cert, key):
        listener = [("address", "127.0.0.1:%d" % port), ("certificate", cert),
                    ("private_key", key)]
        if ca:
            listener.append(("client_ca", ca))
        if crl:
            listener.append(("client_crl", crl))
        if verify:
            listener.append(("client_verify", verify))
        if header:
            listener.append(("client_cert_header", header))
        if early:
            listener.append(("early_data", early))
        glob = [("log_level", "debug")]
        if access_log:
            glob += [("access_log", access_log), ("access_log_format", "json")]
        sections = [("global", glob), ("listener main", listener)]
        if extra_listener:
            sections.append(("listener open", [
                ("address", "127.0.0.1:%d" % extra_listener), ("certificate", cert),
                ("private_key", key)] + ([("client_cert_header", extra_header)]
                                         if extra_header else [])))
        route = [("path_prefix", "/app/"), ("backend", "app")]
        if route_set:
            route.append(("set_request_header", route_set))
        return sections + [("backend app", [("server", backend)]), ("route app", route)]
    return build


def _get(port, client=None, headers=(), path="/app/echo-headers"):
    """GET over HTTP/3 by libcurl, which shows client's certificate (pem,
    key) when the server asks for one."""
    return h3_request("https://127.0.0.1:%d%s" % (port, path), headers=headers,
                      client_cert=client)


def _perform(c, col):
    """Another request on c's connection: its status and body."""
    col.chunks.clear()
    c.perform()
    return c.getinfo(pycurl.RESPONSE_CODE), b"".join(col.chunks)


def _sent_away_after_reload(q, c, col, backend_app):
    """A reload, then another request on c's connection: answered 421 on
    that same connection, and no backend sees it."""
    assert qproxyctl(q, "reload").returncode == 0
    before = len(backend_app.requests)
    status, body = _perform(c, col)
    assert c.getinfo(pycurl.NUM_CONNECTS) == 0      # the same connection
    assert (status, len(backend_app.requests)) == (421, before), body


def _start(qproxy_factory, pki, sections):
    """A qproxy whose start-up request shows bob's certificate."""
    q = qproxy_factory(sections=sections, start=False)
    q.probe_client_cert = pki["bob"][:2]
    return q.start()


def _seen(resp, name):
    """The values of the fields of that name the backend received."""
    got = json.loads(resp.body)
    return [v for n, v in got["headers"] if n.lower() == name]


def _value(der):
    """client_cert_header's value for a certificate (DER): its digest, and
    its subject as RFC 4514 writes it (here, as the cryptography package
    does) in a quoted string."""
    dn = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return 'Hash=%s;Subject="%s"' % (hashlib.sha256(der).hexdigest(),
                                      dn.replace("\\", "\\\\").replace('"', '\\"'))


def _refused(port, client=None):
    with pytest.raises(pycurl.error) as e:
        _get(port, client)
    return e.value


def _conns(q, since=None):
    """The connections' counts, less since's."""
    c = stats(q)["connections"]
    return {k: v - (since or {}).get(k, 0) for k, v in c.items()}


def test_a_client_of_the_ca_is_served_and_named_to_its_backend(qproxy_factory, backend_app,
                                                               pki, tmp_path):
    log = tmp_path / "access.log"
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"],
                                              access_log=str(log)))
    base = _conns(q)
    r = _get(q.port, pki["alice"][:2], headers=["X-Client-Cert: Hash=forged",
                                                "x-CLIENT-cert: another"])
    assert r.status == 200
    # its own, the subject as RFC 4514 writes it (CN=alice,O=Acme \"Q\"\\),
    # in a quoted string; the client's fields of that name are gone
    alice = _value(pki["alice"][2])
    assert alice.endswith(r';Subject="CN=alice,O=Acme \\\"Q\\\"\\\\"'), alice
    assert _seen(r, "x-client-cert") == [alice]
    r = _get(q.port, pki["bob"][:2], path="/app/bytes/100")
    assert r.status == 200 and r.body == expected_body(100)
    c = _conns(q, base)
    assert (c["client_certs_verified"], c["client_certs_refused"],
            c["client_certs_missing"]) == (2, 0, 0)
    # qproxyctl conns, of a connection libcurl keeps open
    c, col = make_easy(q.url("/app/bytes/10"), client_cert=pki["alice"][:2])
    try:
        c.perform()
        p = qproxyctl(q, "conns", "--json")
    finally:
        c.close()
    got = [e["client_cert"] for e in json.loads(p.stdout)["connections"]
           if e["state"] == "open"]
    assert got == [alice], p.stdout
    # and the access log's
    wait_until(lambda: log.read_text().count("\n") >= 4, "four access log lines")
    got = {e["path"]: e["client_cert"] for e in map(json.loads, log.read_text().splitlines())}
    assert got["/app/echo-headers"] == got["/app/bytes/10"] == alice
    assert got["/app/bytes/100"] == _value(pki["bob"][2])


def test_a_client_without_one_is_refused_in_the_handshake(qproxy_factory, backend_app, pki):
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"]))
    base = _conns(q)
    before = len(backend_app.requests)
    _refused(q.port)
    wait_until(lambda: _conns(q, base)["handshakes_failed"] == 1, "the connection freed")
    c = _conns(q, base)
    assert (c["client_certs_missing"], c["client_certs_verified"]) == (1, 0)
    assert c["handshakes_completed"] == 0
    assert len(backend_app.requests) == before


@pytest.mark.parametrize("who", ["stranger", "expired"])
def test_a_certificate_the_ca_did_not_issue_or_out_of_date_is_refused(
        qproxy_factory, backend_app, pki, who):
    """(stranger: another CA's, with the same subject as alice's)"""
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"]))
    base = _conns(q)
    _refused(q.port, pki[who][:2])
    c = _conns(q, base)
    assert (c["client_certs_refused"], c["client_certs_verified"]) == (1, 0)
    assert c["handshakes_completed"] == 0


def test_optional_serves_a_client_without_one_and_refuses_a_bad_one(qproxy_factory,
                                                                    backend_app, pki):
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"],
                                              verify="optional", header="X-Peer"))
    base = _conns(q)
    r = _get(q.port, headers=["X-Peer: Hash=forged"])
    assert r.status == 200 and _seen(r, "x-peer") == []
    r = _get(q.port, pki["bob"][:2])
    assert _seen(r, "x-peer") == [_value(pki["bob"][2])]
    _refused(q.port, pki["stranger"][:2])
    c = _conns(q, base)
    assert (c["client_certs_verified"], c["client_certs_refused"],
            c["client_certs_missing"]) == (1, 1, 0)


def test_a_route_may_require_one_where_the_listener_does_not(qproxy_factory, backend_app,
                                                             pki):
    """client_verify = optional serves the site to all, require_client_cert
    the route to those that showed a certificate."""
    def build(port, cert, key):
        sections = _sections(backend_app.tcp_server, ca=pki["ca"],
                             verify="optional")(port, cert, key)
        return sections + [("route admin", [("path_prefix", "/admin/"), ("backend", "app"),
                                            ("require_client_cert", "on")])]
    q = _start(qproxy_factory, pki, build)
    before = len(backend_app.requests)
    forbidden = stats(q)["requests"]["forbidden"]
    assert _get(q.port, path="/admin/echo-headers").status == 403
    assert len(backend_app.requests) == before
    assert stats(q)["requests"]["forbidden"] == forbidden + 1
    assert _get(q.port, path="/app/bytes/10").status == 200
    r = _get(q.port, pki["bob"][:2], path="/admin/echo-headers")
    assert r.status == 200
    assert _seen(r, "x-client-cert") == [_value(pki["bob"][2])]


def test_a_revoked_certificate_is_refused_until_a_reload_takes_a_crl_without_it(
        qproxy_factory, backend_app, pki, tmp_path):
    crl = _crl(tmp_path / "ca.crl", pki["ca_key"], revoked=[pki["alice"][2]])
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"], crl=crl))
    base = _conns(q)
    _refused(q.port, pki["alice"][:2])
    assert _get(q.port, pki["bob"][:2], path="/app/bytes/10").status == 200
    c = _conns(q, base)
    assert (c["client_certs_refused"], c["client_certs_verified"]) == (1, 1)
    _crl(tmp_path / "ca.crl", pki["ca_key"], revoked=[pki["bob"][2]])
    assert qproxyctl(q, "reload").returncode == 0
    assert _get(q.port, pki["alice"][:2], path="/app/bytes/10").status == 200
    _refused(q.port, pki["bob"][:2])


def test_a_client_whose_issuer_has_no_crl_is_refused(qproxy_factory, backend_app, pki,
                                                     tmp_path):
    """client_ca has two CAs, client_crl one CA's CRL: the other's clients
    cannot be checked, and are refused; without client_crl, served."""
    crl = _crl(tmp_path / "ca.crl", pki["ca_key"])
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["both"], crl=crl))
    _refused(q.port, pki["stranger"][:2])
    text = open(q.conf).read()
    with open(q.conf, "w") as f:
        f.write(text.replace("client_crl = %s\n" % crl, ""))
    assert qproxyctl(q, "reload").returncode == 0
    assert _get(q.port, pki["stranger"][:2], path="/app/bytes/10").status == 200


def test_every_client_is_refused_once_the_crl_is_out_of_date(qproxy_factory, backend_app,
                                                             pki, tmp_path):
    """and qproxy says so before: in the last quarter of the CRL's time
    (here its last 12 hours of 2 days), in the log and in qproxyctl stats,
    and again once it is out of date."""
    crl = _crl(tmp_path / "ca.crl", pki["ca_key"])
    q = qproxy_factory(sections=_sections(backend_app.tcp_server, ca=pki["ca"], crl=crl),
                       start=False)
    q.probe_client_cert = pki["bob"][:2]
    clock = preload_clock(q, str(tmp_path / "clock"))
    q.start()
    tls = lambda: stats(q)["tls"]
    assert (tls()["crls_expiring"], tls()["crls_out_of_date"]) == (0, 0)
    assert _get(q.port, pki["alice"][:2], path="/app/bytes/10").status == 200
    clock(13 * 3600)
    wait_until(lambda: tls()["crls_expiring"] == 1, "the CRL counted as expiring", 5)
    wait_until(lambda: "client_crl %s: CRL 1 is out of date at " % crl in q.log_text(),
               "the log's warning", 5)
    assert _get(q.port, pki["alice"][:2], path="/app/bytes/10").status == 200
    clock(2 * 86400)     # past the CRL's next update, not the certificates' end
    wait_until(lambda: (tls()["crls_expiring"], tls()["crls_out_of_date"]) == (0, 1),
               "the CRL counted as out of date", 5)
    assert "client_crl %s: CRL 1 is out of date since " % crl in q.log_text()
    _refused(q.port, pki["alice"][:2])


@pytest.mark.parametrize("header", [None, "X-Peer"])
def test_another_listener_drops_the_field_too(qproxy_factory, backend_app, pki, header):
    """A client of a listener without client_ca could otherwise send the
    field that the backend trusts from the other one: the default's, or
    the name the other listener sets."""
    from conftest import free_udp_port
    other = free_udp_port()
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"],
                                              extra_listener=other, header=header))
    base = _conns(q)
    name = (header or "X-Client-Cert").lower()
    r = _get(other, headers=["%s: Hash=forged" % name, "X-Other: kept"])
    assert r.status == 200 and _seen(r, name) == [] and _seen(r, "x-other") == ["kept"]
    assert _conns(q, base)["client_certs_verified"] == 0


def test_without_client_ca_anywhere_the_field_passes(qproxy_factory, backend_app):
    """The control of the one above: no listener asks for certificates,
    client_cert_header is not set, and the field is the client's to send."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server))
    r = _get(q.port, headers=["X-Client-Cert: mine"])
    assert _seen(r, "x-client-cert") == ["mine"]


def _gtls(port, outdir, path, *extra):
    return subprocess.run([gtlsclient_binary(), "-q", "--exit-on-all-streams-close",
                           "--download=%s" % outdir, "--timeout=10s"] + list(extra) +
                          ["127.0.0.1", str(port), "https://localhost:%d%s" % (port, path)],
                          capture_output=True, timeout=60)


def test_a_ticket_from_before_client_ca_resumes_nothing(qproxy_factory, backend_app, pki,
                                                        tmp_path):
    """A session resumed shows no certificate: a ticket issued before a
    reload gave the listener client_ca would let a client without one in.
    (gtlsclient has no certificate to show.)"""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server))
    sess, tp = tmp_path / "session", tmp_path / "tp"
    resume = ["--session-file=%s" % sess, "--tp-file=%s" % tp]
    _gtls(q.port, tmp_path, "/app/bytes/1", *resume, "--wait-for-ticket")
    assert sess.exists() and tp.exists(), "no session ticket came"
    # the control: that ticket resumes
    _gtls(q.port, tmp_path, "/app/bytes/2", *resume)
    assert (tmp_path / "2").read_bytes() == expected_body(2)
    assert stats(q)["quic"]["resumed_handshakes"] == 1
    text = open(q.conf).read()
    with open(q.conf, "w") as f:
        f.write(text.replace("[listener main]\n", "[listener main]\nclient_ca = %s\n"
                             % pki["ca"], 1))
    assert qproxyctl(q, "reload").returncode == 0
    before = len(backend_app.requests)
    p = _gtls(q.port, tmp_path, "/app/bytes/3", *resume)
    got = (tmp_path / "3").read_bytes() if (tmp_path / "3").exists() else b""
    assert got == b"", p
    assert len(backend_app.requests) == before
    assert stats(q)["quic"]["resumed_handshakes"] == 1
    assert _conns(q)["client_certs_missing"] == 1


def test_a_client_ca_listener_issues_no_ticket(qproxy_factory, backend_app, pki):
    """libcurl, with its certificate, makes a second connection in full."""
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"]))
    base = _conns(q)
    for _ in range(2):
        assert _get(q.port, pki["alice"][:2], path="/app/bytes/10").status == 200
    assert stats(q)["quic"]["resumed_handshakes"] == 0
    assert _conns(q, base)["client_certs_verified"] == 2


def test_a_connection_from_before_a_reload_that_asks_is_sent_to_make_a_new_one(
        qproxy_factory, backend_app, pki):
    """Its handshake showed no certificate: its next request gets 421
    (Misdirected Request) and reaches no backend; a new connection shows
    the client's."""
    q = qproxy_factory(sections=_sections(backend_app.tcp_server))
    c, col = make_easy(q.url("/app/bytes/10"), client_cert=pki["alice"][:2])
    try:
        assert _perform(c, col)[0] == 200
        text = open(q.conf).read()
        with open(q.conf, "w") as f:
            f.write(text.replace("[listener main]\n", "[listener main]\nclient_ca = %s\n"
                                 % pki["ca"], 1))
        _sent_away_after_reload(q, c, col, backend_app)
    finally:
        c.close()
    assert stats(q)["requests"]["misdirected"] == 1
    r = _get(q.port, pki["alice"][:2])
    assert _seen(r, "x-client-cert") == [_value(pki["alice"][2])]


def _check(tmp_path, text):
    conf = tmp_path / "q.conf"
    conf.write_text(text)
    p = subprocess.run([qproxy_binary(), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    return conf, p


def _conf(cert, key, listener_extra, rest="[backend app]\nserver = 127.0.0.1:1\n"
          "[route all]\nbackend = app\n"):
    return ("[listener main]\naddress = 127.0.0.1:4433\ncertificate = %s\nprivate_key = %s\n"
            "%s" % (cert, key, listener_extra)) + rest


@pytest.mark.parametrize("extra,line,message", [
    ("client_verify = optional\n", 5, "client_verify: the listener has no client_ca"),
    ("client_ca = %(ca)s\nearly_data = on\n", 6,
     "early_data: a listener with client_ca resumes no session, so takes no 0-RTT"),
    ("client_ca = %(ca)s\nclient_verify = maybe\n", 6,
     'client_verify: invalid value "maybe": expected require or optional'),
    ("client_ca = %(ca)s\nclient_cert_header = Host\n", 6,
     'client_cert_header: qproxy writes "host" itself'),
    ("client_ca = /nonexistent/ca.pem\n", 5, 'client_ca: cannot open "/nonexistent/ca.pem"'),
    ("client_ca = %(key)s\n", 5, "listener main: client_ca %(key)s:"),
    ("", 9, "require_client_cert: no listener has client_ca"),
    ("client_crl = %(crl)s\n", 5, "client_crl: the listener has no client_ca"),
    ("client_ca = %(ca)s\nclient_crl = %(ca)s\n", 6,
     "listener main: client_crl %(ca)s: no PEM CRL in it, or a damaged one"),
    ("client_ca = %(ca)s\nclient_crl = %(other_crl)s\n", 6,
     "listener main: client_crl %(other_crl)s: CRL 1: "),
    ("client_ca = %(ca)s\nclient_crl = %(old_crl)s\n", 6,
     "listener main: client_crl %(old_crl)s: CRL 1: CRL date error"),
])
def test_a_bad_client_ca_configuration_is_refused_at_its_line(tmp_path, certificate, pki,
                                                              extra, line, message):
    cert, key = certificate
    args = {"ca": pki["ca"], "key": key,
            "crl": _crl(tmp_path / "ca.crl", pki["ca_key"]),
            "other_crl": _crl(tmp_path / "other.crl", pki["other_key"]),
            "old_crl": _crl(tmp_path / "old.crl", pki["ca_key"], days=(-3, -1))}
    rest = "[backend app]\nserver = 127.0.0.1:1\n[route all]\nbackend = app\n"
    if not extra:
        rest += "require_client_cert = on\n"
    conf, p = _check(tmp_path, _conf(cert, key, extra % args, rest))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "%s:%d: %s" % (conf, line, message % args) in p.stderr, p.stderr


def test_every_listener_names_the_same_field(tmp_path, certificate, pki):
    cert, key = certificate
    second = ("[listener two]\naddress = 127.0.0.1:4434\ncertificate = %s\n"
              "private_key = %s\nclient_ca = %s\n" % (cert, key, pki["ca"]))
    conf, p = _check(tmp_path, _conf(cert, key, "client_ca = %s\nclient_cert_header = X-Peer\n"
                                     % pki["ca"]) + second)
    assert p.returncode == 1
    assert ('%s:11: client_cert_header: "x-client-cert", where listener main has "x-peer": '
            'every listener\'s is the same, as a client of one could send the other\'s'
            % conf) in p.stderr, p.stderr
    conf, p = _check(tmp_path, _conf(cert, key, "client_ca = %s\nclient_cert_header = X-Peer\n"
                                     % pki["ca"]) + second + "client_cert_header = x-peer\n")
    assert p.returncode == 0, p.stderr


def test_off_on_one_listener_where_another_names_the_field_is_refused(tmp_path, certificate,
                                                                     pki):
    """A listener whose client_cert_header is off drops nothing: its clients
    could send the field another listener's backend trusts."""
    cert, key = certificate
    for ca in ("", "client_ca = %s\n" % pki["ca"]):
        second = ("[listener two]\naddress = 127.0.0.1:4434\ncertificate = %s\n"
                  "private_key = %s\n%sclient_cert_header = off\n" % (cert, key, ca))
        conf, p = _check(tmp_path, _conf(cert, key, "client_ca = %s\n" % pki["ca"]) + second)
        assert p.returncode == 1, p.stderr
        assert ('client_cert_header: off, where listener main has "x-client-cert": '
                'every listener\'s is the same, as a client of one could send the other\'s'
                in p.stderr), p.stderr
    # off everywhere that names one is a configuration
    conf, p = _check(tmp_path, _conf(cert, key, "client_ca = %s\nclient_cert_header = off\n"
                                     % pki["ca"]) + second)
    assert p.returncode == 0, p.stderr


def test_the_field_may_be_no_other_than_qproxy_or_a_route_sets(tmp_path, certificate, pki):
    cert, key = certificate
    conf, p = _check(tmp_path, "[global]\nrequest_id_header = X-Id\n" + _conf(
        cert, key, "client_ca = %s\nclient_cert_header = x-id\n" % pki["ca"]))
    assert p.returncode == 1
    assert '%s:8: client_cert_header: "x-id" is request_id_header\'s too' % conf in p.stderr
    conf, p = _check(tmp_path, _conf(cert, key, "client_ca = %s\n" % pki["ca"],
                                     "[backend app]\nserver = 127.0.0.1:1\n[route all]\n"
                                     "backend = app\nset_request_header = X-Client-Cert: x\n"))
    assert p.returncode == 1
    assert ('%s:1: client_cert_header: route all sets "x-client-cert" too '
            '(set_request_header)' % conf) in p.stderr, p.stderr
    # the control: with its own name, each is taken
    conf, p = _check(tmp_path, "[global]\nrequest_id_header = X-Id\n" + _conf(
        cert, key, "client_ca = %s\nclient_cert_header = x-peer\n" % pki["ca"]))
    assert p.returncode == 0, p.stderr


def test_a_reload_with_a_bad_client_ca_keeps_the_old_configuration(qproxy_factory,
                                                                   backend_app, pki, tmp_path):
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"]))
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                   "-----END CERTIFICATE-----\n")
    text = open(q.conf).read()
    with open(q.conf, "w") as f:
        f.write(text.replace(pki["ca"], str(bad)))
    p = qproxyctl(q, "reload")
    assert p.returncode == 1
    assert "listener main: client_ca %s:" % bad in p.stderr, p.stderr
    assert _get(q.port, pki["alice"][:2], path="/app/bytes/10").status == 200
    _refused(q.port)


@pytest.mark.parametrize("name", ["x_client_cert", "x-client_cert"])
def test_the_field_spelt_with_underscores_is_dropped(qproxy_factory, backend_app, pki, name):
    """CGI, WSGI, Rack and PHP give a backend x_client_cert as
    HTTP_X_CLIENT_CERT, the variable X-Client-Cert is read from (as
    request.c's field_kind says of qproxy's other fields)."""
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"],
                                              verify="optional"))
    r = _get(q.port, headers=["%s: Hash=forged" % name])
    assert r.status == 200
    assert [n for n, _ in json.loads(r.body)["headers"]
            if n.lower().replace("_", "-") == "x-client-cert"] == []


def test_the_field_spelt_with_underscores_is_dropped_from_trailers(qproxy_factory, backend_app,
                                                                   pki):
    from helpers import h3raw
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"],
                                              verify="optional"))
    before = len(backend_app.requests)
    r = h3raw(q.port, [":method: POST", ":scheme: https", ":authority: localhost",
                       ":path: /app/upload"], data=10,
              trailers=["x_client_cert: Hash=forged", "x-client-cert: Hash=forged",
                        "x-other: kept"])
    assert r.outcomes and r.outcomes[0].startswith("status 200"), r
    wait_until(lambda: len(backend_app.requests) > before and
               backend_app.requests[-1]["body_done"], "the upload's end")
    assert backend_app.requests[-1]["trailers"] == [["x-other", "kept"]]


def test_a_routes_header_key_may_not_be_the_field(tmp_path, certificate, pki):
    """A route's header key reads the client's fields: X-Client-Cert there
    would send a client without a certificate that sends the field itself
    down the route, and one with a certificate elsewhere."""
    cert, key = certificate
    conf, p = _check(tmp_path, _conf(
        cert, key, "client_ca = %s\nclient_verify = optional\n" % pki["ca"],
        "[backend app]\nserver = 127.0.0.1:1\n[route certified]\nheader = X-Client-Cert\n"
        "return = 200 certified\n"))
    assert p.returncode == 1
    assert ('%s:10: header: "x-client-cert" is client_cert_header, which no '
            'route sees: use require_client_cert' % conf) in p.stderr, p.stderr
    # the name set, spelt with "_"; and the control: another field
    conf, p = _check(tmp_path, _conf(
        cert, key, "client_ca = %s\nclient_cert_header = X-Peer\n" % pki["ca"],
        "[backend app]\nserver = 127.0.0.1:1\n[route r]\nheader = X_Peer\n"
        "backend = app\n"))
    assert p.returncode == 1 and "header: \"x_peer\" is client_cert_header" in p.stderr, \
        p.stderr
    conf, p = _check(tmp_path, _conf(
        cert, key, "client_ca = %s\n" % pki["ca"],
        "[backend app]\nserver = 127.0.0.1:1\n[route r]\nheader = X-Canary\nbackend = app\n"))
    assert p.returncode == 0, p.stderr


# connections open across a reload


def test_a_reload_that_revokes_a_connections_certificate_serves_it_no_more(
        qproxy_factory, backend_app, pki, tmp_path):
    """alice's connection, open across the reload whose CRL lists her
    certificate, is sent to make a new one (421), which is refused, and
    its backend is not told her name any more."""
    crl = _crl(tmp_path / "ca.crl", pki["ca_key"])
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"], crl=crl))
    c, col = make_easy(q.url("/app/echo-headers"), client_cert=pki["alice"][:2])
    try:
        assert _perform(c, col)[0] == 200
        _crl(tmp_path / "ca.crl", pki["ca_key"], revoked=[pki["alice"][2]])
        _sent_away_after_reload(q, c, col, backend_app)
    finally:
        c.close()
    _refused(q.port, pki["alice"][:2])


def test_a_reload_that_trusts_another_ca_serves_the_old_cas_clients_no_more(
        qproxy_factory, backend_app, pki):
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"]))
    c, col = make_easy(q.url("/app/echo-headers"), client_cert=pki["alice"][:2])
    try:
        assert _perform(c, col)[0] == 200
        text = open(q.conf).read()
        with open(q.conf, "w") as f:
            f.write(text.replace(pki["ca"], pki["other_key"]["pem"]))
        _sent_away_after_reload(q, c, col, backend_app)
    finally:
        c.close()


def test_a_reload_that_changes_nothing_of_client_ca_keeps_the_connection(
        qproxy_factory, backend_app, pki, tmp_path):
    """The control of the two above."""
    crl = _crl(tmp_path / "ca.crl", pki["ca_key"])
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"], crl=crl))
    c, col = make_easy(q.url("/app/echo-headers"), client_cert=pki["alice"][:2])
    try:
        assert _perform(c, col)[0] == 200
        assert qproxyctl(q, "reload").returncode == 0
        status, body = _perform(c, col)
        assert c.getinfo(pycurl.NUM_CONNECTS) == 0
        assert status == 200
        assert [v for n, v in json.loads(body)["headers"] if n.lower() == "x-client-cert"] == [
            _value(pki["alice"][2])]
    finally:
        c.close()


def test_a_listener_a_reload_took_away_lends_its_clients_no_other_listeners_field(
        qproxy_factory, backend_app, pki):
    """partner trusts another CA; once a reload takes it away, its client
    (the other CA's "alice") is not named to the backend as though main,
    which trusts another CA, had verified it: its connection is sent away
    (421)."""
    from conftest import free_udp_port
    side = free_udp_port()

    def build(port, cert, key):
        sections = _sections(backend_app.tcp_server, ca=pki["ca"])(port, cert, key)
        return sections[:2] + [("listener partner", [
            ("address", "127.0.0.1:%d" % side), ("certificate", cert), ("private_key", key),
            ("client_ca", pki["other_key"]["pem"])])] + sections[2:]
    q = _start(qproxy_factory, pki, build)
    c, col = make_easy("https://127.0.0.1:%d/app/echo-headers" % side,
                       client_cert=pki["stranger"][:2])
    try:
        status, body = _perform(c, col)
        assert status == 200
        assert [v for n, v in json.loads(body)["headers"] if n.lower() == "x-client-cert"] == [
            _value(pki["stranger"][2])]
        text = open(q.conf).read()
        start = text.index("[listener partner]")
        end = text.index("[", start + 1)
        with open(q.conf, "w") as f:
            f.write(text[:start] + text[end:])
        _sent_away_after_reload(q, c, col, backend_app)
    finally:
        c.close()



def test_two_subjects_are_never_told_alike(qproxy_factory, backend_app, pki, tmp_path):
    """A CA that lets its clients choose their common name (a user name)
    issues "bob/CN=admin" or "admin,CN=bob"; the backend must not read it
    as the certificate whose subject is CN=bob, CN=admin. Nor may two long
    subjects that differ at their end read the same (wolfSSL's one-line
    subject, which qproxy sent before, did both)."""
    d = str(tmp_path)
    ca = pki["ca_key"]
    one = _client(d, "one", ca, _name((NameOID.COMMON_NAME, "bob/CN=admin")))
    two = _client(d, "two", ca, _name((NameOID.COMMON_NAME, "bob"),
                                      (NameOID.COMMON_NAME, "admin")))
    long1 = _client(d, "long1", ca, _name((NameOID.ORGANIZATION_NAME, "o" * 80),
                                          (NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 80),
                                          (NameOID.LOCALITY_NAME, "l" * 80),
                                          (NameOID.STATE_OR_PROVINCE_NAME, "s" * 80),
                                          (NameOID.COMMON_NAME, "alice")))
    long2 = _client(d, "long2", ca, _name((NameOID.ORGANIZATION_NAME, "o" * 80),
                                          (NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 80),
                                          (NameOID.LOCALITY_NAME, "l" * 80),
                                          (NameOID.STATE_OR_PROVINCE_NAME, "t" * 80),
                                          (NameOID.COMMON_NAME, "alice")))
    three = _client(d, "three", ca, _name((NameOID.COMMON_NAME, "admin,CN=bob")))
    # a type RFC 4514 has no name for (by its OID), a value with spaces at
    # its ends, one of RFC 4514's special characters, one beyond ASCII (as
    # hex pairs, where the cryptography package writes UTF-8); wolfSSL
    # refuses a certificate with a multi-valued RDN (test_tls has one)
    other = _client(d, "other", ca, _name((NameOID.EMAIL_ADDRESS, "a@example.com"),
                                          (NameOID.ORGANIZATIONAL_UNIT_NAME, " #ops "),
                                          (NameOID.COMMON_NAME, "b+c;d<e>"),
                                          (NameOID.COMMON_NAME, "Zo\u00e9")))
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=pki["ca"]))

    def subject(client):
        v = _seen(_get(q.port, client[:2]), "x-client-cert")[0]
        assert client is other or v == _value(client[2])
        return v[v.index(";Subject="):]
    s1, s2, s3, l1, l2, o = (subject(c) for c in (one, two, three, long1, long2, other))
    assert len({s1, s2, s3}) == 3, (s1, s2, s3)
    assert l1 != l2, (l1, l2)
    assert o == (r';Subject="CN=Zo\\C3\\A9,CN=b\\+c\\;d\\<e\\>,OU=\\ #ops\\ ,'
                 r'1.2.840.113549.1.9.1=a@example.com"'), o


def test_workers_each_verify_drop_and_send_away_alike(qproxy_factory, backend_app, pki,
                                                      tmp_path):
    """workers = 2: each worker names its clients, drops the client's field
    in any spelling, adds its counts to stats, and sends a connection
    whose certificate a reload's CRL lists to make a new one."""
    crl = _crl(tmp_path / "ca.crl", pki["ca_key"])
    base = _sections(backend_app.tcp_server, ca=pki["ca"], crl=crl, verify="optional")

    def build(port, cert, key):
        sections = base(port, cert, key)
        sections[0] = ("global", sections[0][1] + [("workers", "2")])
        return sections
    q = _start(qproxy_factory, pki, build)
    wait_until(lambda: stats(q)["workers"]["answered"] == 2, "both workers answering",
               timeout=20)
    counts = _conns(q)
    alice = _value(pki["alice"][2])
    for _ in range(6):
        r = _get(q.port, pki["alice"][:2], headers=["x_client_cert: forged"])
        assert (_seen(r, "x-client-cert"), _seen(r, "x_client_cert")) == ([alice], [])
        r = _get(q.port, headers=["X-Client-Cert: forged"])
        assert _seen(r, "x-client-cert") == []
    assert _conns(q, counts)["client_certs_verified"] == 6
    c, col = make_easy(q.url("/app/echo-headers"), client_cert=pki["alice"][:2])
    try:
        assert _perform(c, col)[0] == 200
        _crl(tmp_path / "ca.crl", pki["ca_key"], revoked=[pki["alice"][2]])
        _sent_away_after_reload(q, c, col, backend_app)
    finally:
        c.close()
    _refused(q.port, pki["alice"][:2])


@pytest.mark.xfail(strict=True, reason="client_crl checks the client's certificate alone "
                   "(wolfSSL_CTX_EnableCRL without WOLFSSL_CRL_CHECKALL)")
def test_a_client_of_an_intermediate_its_root_revoked_is_refused(qproxy_factory, backend_app,
                                                                  pki, tmp_path):
    """client_ca has the root and its intermediate (an intermediate's CRL
    loads only so: one not in client_ca has no signer), client_crl the
    root's, which revokes the intermediate, and the intermediate's: a
    client the intermediate issued is served all the same."""
    d = str(tmp_path)
    root = pki["ca_key"]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name((NameOID.COMMON_NAME, "intermediate")))
            .issuer_name(root["cert"].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root["key"], hashes.SHA256()))
    pem, _ = write_pem_pair(d, "intermediate", cert, key)
    inter = {"pem": pem, "cert": cert, "key": key}
    carol = _client(d, "carol", inter, _name((NameOID.COMMON_NAME, "carol")))
    ca, crl = os.path.join(d, "ca.pem"), os.path.join(d, "all.crl")
    with open(ca, "w") as f:
        f.write(open(pki["ca"]).read() + open(pem).read())
    with open(crl, "w") as f:
        f.write(open(_crl(tmp_path / "root.crl", root, revoked=[
            cert.public_bytes(serialization.Encoding.DER)])).read() +
            open(_crl(tmp_path / "inter.crl", inter)).read())
    q = _start(qproxy_factory, pki, _sections(backend_app.tcp_server, ca=ca, crl=crl))
    _refused(q.port, carol[:2])


def test_a_crl_file_cut_short_is_refused(tmp_path, certificate, pki):
    """An older CRL, still in force, then a newer one that revokes alice,
    cut short: the file was taken with the older one alone, and alice
    served."""
    cert, key = certificate
    older = open(_crl(tmp_path / "older.crl", pki["ca_key"])).read()
    newer = open(_crl(tmp_path / "newer.crl", pki["ca_key"],
                      revoked=[pki["alice"][2]])).read()
    path = tmp_path / "all.crl"
    for cut in (newer[:len(newer) // 2], newer.replace("-----END X509 CRL-----\n", "")):
        path.write_text(older + cut)
        conf, p = _check(tmp_path, _conf(cert, key, "client_ca = %s\nclient_crl = %s\n"
                                         % (pki["ca"], path)))
        assert p.returncode == 1, p.stderr
        assert ('%s:6: listener main: client_crl %s: CRL 2: no "-----END X509 CRL-----" line'
                % (conf, path)) in p.stderr, p.stderr
    path.write_text(older + newer)
    assert _check(tmp_path, _conf(cert, key, "client_ca = %s\nclient_crl = %s\n"
                                  % (pki["ca"], path)))[1].returncode == 0
