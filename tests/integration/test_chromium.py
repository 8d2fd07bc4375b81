"""Chromium, a browser, fetching through qproxy over HTTP/3.

Each test starts a headless Chromium (tests/tools/cdp.py drives it over the
DevTools protocol) that speaks HTTP/3 to a private qproxy at once
(--origin-to-force-quic-on) and trusts the test certificate by its key
hash. Nothing listens on TCP at that port, so a page or fetch that loads at
all came over QUIC, and each test also asks Chromium which protocol it used.
"""

import json
import time

import pytest

from cdp import CDPError, Chromium, chromium_binary, spki_hash
from relay import Faults, Relay
from helpers import SLOW, app_sections, expected_sha256, qproxy_stats

KiB = 1024
MiB = 1024 * 1024


@pytest.fixture
def proxy(qproxy_factory, backend_app, refusing):
    """A private qproxy: /app/ to the test backend, /down/ to a refused
    port, no route for anything else."""
    return qproxy_factory(sections=app_sections(
        backend_app.tcp_server,
        backends=[("backend down", [("server", "127.0.0.1:%d" % refusing.port),
                                    ("connect_timeout", "1s")])],
        routes=[("route down", [("path_prefix", "/down/"), ("backend", "down")])]))


@pytest.fixture
def browser(proxy, certificate):
    """A headless Chromium on a page of the proxy's origin."""
    if not chromium_binary():
        pytest.fail("chromium is not installed (make deps installs it)", pytrace=False)
    c = Chromium("127.0.0.1:%d" % proxy.port, spki_hash(certificate[0]),
                 timeout=30 * SLOW)
    try:
        c.start()
    except CDPError as e:
        pytest.fail("chromium did not start: %s" % e, pytrace=False)
    c.origin = "https://127.0.0.1:%d" % proxy.port
    r = c.navigate(c.origin + "/app/status/200")
    assert not r.get("errorText"), "chromium could not load a page: %r\n%s" % (
        r, c.stderr_tail())
    yield c
    c.close()


def protocol_of(browser, url_part):
    """nextHopProtocol of every resource whose URL contains url_part."""
    return browser.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes(%s)).map(e => e.nextHopProtocol)"
        % json.dumps(url_part))


def test_chromium_loads_a_page_over_http3(proxy, browser, backend_app):
    before = qproxy_stats(proxy)
    n0 = backend_app.count
    r = browser.navigate(browser.origin + "/app/echo-headers?page=1")
    assert not r.get("errorText"), r
    assert browser.evaluate(
        "performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h3"
    seen = json.loads(browser.evaluate("document.body.innerText"))
    fields = {}
    for name, value in seen["headers"]:
        fields.setdefault(name.lower(), []).append(value)
    assert seen["method"] == "GET" and seen["target"] == "/app/echo-headers?page=1"
    assert fields["host"] == ["127.0.0.1:%d" % proxy.port]
    assert fields["x-forwarded-proto"] == ["https"]
    assert fields["x-forwarded-for"] == ["127.0.0.1"]
    assert any("qproxy" in v for v in fields["via"])
    assert "Chrome/" in fields["user-agent"][0]
    # what Chromium sends in HTTP/3 reaches the backend as HTTP/1.1 fields,
    # never as pseudo-headers
    assert not [n for n in fields if n.startswith(":")]
    after = qproxy_stats(proxy)
    assert after["requests"]["2xx"] - before["requests"]["2xx"] >= 1
    assert backend_app.count > n0


def test_chromium_fetches_many_bodies_at_once_on_one_connection(proxy, browser):
    """40 fetches in flight together, bodies framed three ways (length,
    chunked, connection close) and up to 3 MiB, each checked by SHA-256
    in the browser; all on the QUIC connection the page came over."""
    sizes = [0, 1, 1000, 16 * KiB + 1, 65536, 300 * KiB, MiB + 3, 3 * MiB]
    paths = []
    for i in range(40):
        n = sizes[i % len(sizes)]
        kind = ("bytes", "chunked", "close")[i % 3]
        paths.append(("/app/%s/%d?i=%d" % (kind, n, i), n))
    before = qproxy_stats(proxy)
    got = browser.evaluate("""
        (async () => {
          const hex = b => Array.from(new Uint8Array(b))
              .map(x => x.toString(16).padStart(2, '0')).join('');
          const one = async p => {
            const r = await fetch(p, {cache: 'no-store'});
            const body = await r.arrayBuffer();
            return [r.status, body.byteLength,
                    hex(await crypto.subtle.digest('SHA-256', body))];
          };
          return await Promise.all(%s.map(one));
        })()""" % json.dumps([p for p, _ in paths]), timeout=120 * SLOW)
    for (path, n), (status, length, digest) in zip(paths, got):
        assert (status, length) == (200, n), path
        assert digest == expected_sha256(n), path
    protos = protocol_of(browser, "?i=")
    assert protos and set(protos) == {"h3"}, protos
    after = qproxy_stats(proxy)
    assert after["connections"]["total"] == before["connections"]["total"], \
        "the fetches opened QUIC connections of their own"
    assert after["requests"]["2xx"] - before["requests"]["2xx"] == len(paths)


UPLOAD_JS = """
(async () => {
  const n = %d;
  const body = new Uint8Array(n);
  for (let i = 0; i < n; i++) body[i] = (i * 7 + (i >> 13)) & 255;
  const hex = b => Array.from(new Uint8Array(b))
      .map(x => x.toString(16).padStart(2, '0')).join('');
  const want = hex(await crypto.subtle.digest('SHA-256', body));
  let r;
  if (%s) {
    // a streamed body: no Content-Length, sent as it is produced
    const piece = 65536;
    let off = 0;
    const stream = new ReadableStream({
      pull(ctl) {
        if (off >= n) { ctl.close(); return; }
        ctl.enqueue(body.slice(off, off + piece));
        off += piece;
      }
    });
    r = await fetch('/app/upload', {method: 'POST', body: stream, duplex: 'half'});
  } else {
    r = await fetch('/app/upload', {method: 'POST', body: body});
  }
  return {status: r.status, want: want, got: await r.json()};
})()"""


@pytest.mark.parametrize("streamed", [False, True], ids=["length", "streamed"])
def test_chromium_uploads_arrive_whole(proxy, browser, backend_app, streamed):
    n = 5 * MiB + 17
    i0 = backend_app.count
    r = browser.evaluate(UPLOAD_JS % (n, "true" if streamed else "false"),
                         timeout=120 * SLOW)
    assert r["status"] == 200, r
    assert r["got"]["length"] == n and r["got"]["sha256"] == r["want"], r
    rec = [q for q in backend_app.requests_since(i0) if q["method"] == "POST"]
    assert len(rec) == 1
    if streamed:
        # no length was known: the backend got the body chunked
        assert r["got"]["chunked"] and r["got"]["content_length"] is None, r
    else:
        assert r["got"]["content_length"] == str(n) and not r["got"]["chunked"], r
    protos = protocol_of(browser, "/app/upload")
    assert protos == ["h3"], protos


def test_chromium_gets_qproxy_own_answers(proxy, browser):
    """No route: 404 from qproxy; a backend that refuses: 502, at once."""
    t0 = time.monotonic()
    codes = browser.evaluate("""
        Promise.all(['/nowhere', '/down/x', '/app/status/204', '/app/status/503']
            .map(p => fetch(p, {cache: 'no-store'})
                .then(async r => [r.status, (await r.text()).length])))""")
    took = time.monotonic() - t0
    assert [c for c, _ in codes] == [404, 502, 204, 503], codes
    assert codes[2][1] == 0, codes
    # connect_timeout is 1 s; a refused connection must not wait for it
    assert took < 5 * SLOW, "the 502 took %.1fs" % took


def test_chromium_takes_gzip_and_reads_it(qproxy_factory, backend_app, certificate):
    """compress = gzip: Chromium asks for gzip, gets the page and a JSON
    body given it (fewer bytes on the wire than in the body, as its own
    timing entries count them) and reads both; a body of a type not listed
    comes as it is."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             glob=[("compress", "gzip")]))
    with Chromium("127.0.0.1:%d" % q.port, spki_hash(certificate[0]),
                  timeout=30 * SLOW) as c:
        origin = "https://127.0.0.1:%d" % q.port
        assert not c.navigate(origin + "/app/images/100").get("errorText")
        assert c.evaluate("document.images.length") == 100
        page = c.evaluate("(e => [e.encodedBodySize, e.decodedBodySize])"
                          "(performance.getEntriesByType('navigation')[0])")
        got = c.evaluate("""
            (async () => {
              const j = await fetch('/app/echo-headers?gz=1', {cache: 'no-store'})
                  .then(r => r.json());
              const b = await fetch('/app/bytes/5000', {cache: 'no-store'})
                  .then(r => r.arrayBuffer());
              const sizes = p => (e => [e.encodedBodySize, e.decodedBodySize])(
                  performance.getEntriesByType('resource')
                      .filter(e => e.name.includes(p))[0]);
              return {ae: j.headers.filter(h => h[0].toLowerCase() == 'accept-encoding')
                          .map(h => h[1]),
                      json: sizes('echo-headers?gz=1'), bytes: b.byteLength,
                      raw: sizes('bytes/5000')};
            })()""")
        st = qproxy_stats(q)["compress"]
    assert page[0] < page[1] / 2, page
    assert "gzip" in got["ae"][0], got
    assert got["json"][0] < got["json"][1], got
    assert got["bytes"] == 5000 and got["raw"] == [5000, 5000], got
    assert st["responses"] >= 2 and st["bytes_out"] < st["bytes_in"], st


def test_chromium_cookies_and_set_cookie_fields(proxy, browser, backend_app):
    """Two Set-Cookie fields in one response both reach the browser;
    the cookies it then sends (HTTP/3 lets it split them into one field
    each) reach the backend as the one Cookie field HTTP/1.1 allows."""
    status = browser.evaluate(
        "fetch('/app/cookies', {cache: 'no-store'}).then(r => r.status)")
    assert status == 200
    browser.evaluate("document.cookie = 'c=3; path=/'")
    assert sorted(browser.evaluate("document.cookie").split("; ")) == ["a=1", "c=3"]
    seen = browser.evaluate(
        "fetch('/app/echo-headers', {cache: 'no-store'}).then(r => r.json())")
    cookies = [v for n, v in seen["headers"] if n.lower() == "cookie"]
    assert len(cookies) == 1, seen["headers"]
    assert sorted(cookies[0].split("; ")) == ["a=1", "b=2", "c=3"], cookies


def test_chromium_takes_early_hints_then_the_response(proxy, browser):
    got = browser.evaluate(
        "fetch('/app/early-hints?n=2', {cache: 'no-store'})"
        ".then(async r => [r.status, await r.text()])")
    assert got == [200, "final response after early hints\n"], got


def test_chromium_second_visit_is_zero_rtt(qproxy_factory, backend_app, certificate):
    """Chromium's next connection resumes the session with the ticket of
    its first and sends its GET in 0-RTT: the backend sees Early-Data: 1.
    Replies reach it 100 ms late through a relay, so the request is ready
    well before its handshake could complete and goes as early data."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             listener=[("early_data", "on")]))
    with Relay(q.port, s2c=Faults(delay_ms=100)) as relay, \
            Chromium("127.0.0.1:%d" % relay.port, spki_hash(certificate[0]),
                     timeout=30 * SLOW, extra_args=["--enable-net-benchmarking"]) as c:
        origin = "https://127.0.0.1:%d" % relay.port
        assert not c.navigate(origin + "/app/status/200").get("errorText")
        first = qproxy_stats(q)
        # closes every connection it has; the session ticket stays
        c.evaluate("chrome.benchmarking.closeConnections()")
        seen = c.evaluate("fetch('/app/echo-headers', {cache: 'no-store'})"
                          ".then(r => r.json())")
        after = qproxy_stats(q)
    early = [v for n, v in seen["headers"] if n.lower() == "early-data"]
    assert early == ["1"], seen["headers"]
    assert after["connections"]["total"] == first["connections"]["total"] + 1
    assert after["quic"]["early_data_requests"] == first["quic"]["early_data_requests"] + 1


def test_chromium_downloads_through_loss_and_a_rebinding_nat(proxy, certificate):
    """Through a relay that drops 5 % of the datagrams each way and moves
    Chromium's side to a new port every half second (a NAT that rebinds),
    Chromium fetches 8 MiB whole on its one connection: qproxy recovers
    what was lost and validates each new path while the body flows.

    The rebinding starts once the handshake is done: before, ngtcp2 drops
    what comes from a new address (RFC 9000 9 lets a server), so a rebind
    that caught Chromium's handshake with a datagram to send again (about
    one run in ten) left it waiting until its 4 s handshake timeout."""
    with Relay(proxy.port, seed=7, c2s=Faults(drop=0.05), s2c=Faults(drop=0.05),
               rebind_mode="port") as relay, \
            Chromium("127.0.0.1:%d" % relay.port, spki_hash(certificate[0]),
                     timeout=60 * SLOW) as c:
        origin = "https://127.0.0.1:%d" % relay.port
        assert not c.navigate(origin + "/app/status/200").get("errorText")
        relay.rebind()
        relay.rebind_from_now(0.5)
        before = qproxy_stats(proxy)
        n = 8 * MiB
        got = c.evaluate("""
            fetch('/app/bytes/%d', {cache: 'no-store'}).then(async r => {
              const body = await r.arrayBuffer();
              const d = await crypto.subtle.digest('SHA-256', body);
              return [r.status, body.byteLength, Array.from(new Uint8Array(d))
                  .map(x => x.toString(16).padStart(2, '0')).join('')];
            })""" % n, timeout=120 * SLOW)
        after = qproxy_stats(proxy)
        rs = relay.stats()
    assert got == [200, n, expected_sha256(n)], got[:2]
    assert after["connections"]["total"] == before["connections"]["total"]
    assert rs["rebinds"] >= 1 and rs["s2c"]["dropped"] > 0 and rs["c2s"]["dropped"] > 0, rs
    assert after["quic"]["migrations"] > before["quic"]["migrations"], after["quic"]


def test_chromium_follows_a_retry(qproxy_factory, backend_app, certificate):
    """With retry = always, Chromium's first Initial gets a Retry, and it
    comes back with the token and loads the page."""
    q = qproxy_factory(sections=app_sections(backend_app.tcp_server,
                                             listener=[("retry", "always")]))
    before = qproxy_stats(q)
    with Chromium("127.0.0.1:%d" % q.port, spki_hash(certificate[0]),
                  timeout=30 * SLOW) as c:
        r = c.navigate("https://127.0.0.1:%d/app/status/200" % q.port)
        assert not r.get("errorText"), r
        assert c.evaluate("document.body.innerText") == "status 200\n"
        assert c.evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h3"
    after = qproxy_stats(q)
    assert after["quic"]["retries_sent"] - before["quic"]["retries_sent"] >= 1, after["quic"]
    assert after["quic"]["tokens_invalid"] == before["quic"]["tokens_invalid"], after["quic"]


def _fetch_sizes_js(first, count):
    """JavaScript: count fetches at once of bytes/(1000 + i), i from first;
    each gives [status, length] or [0, the error]."""
    return """Promise.all(Array.from({length: %d}, (_, k) => %d + k).map(i =>
        fetch('/app/bytes/' + (1000 + i) + '?g=' + i, {cache: 'no-store'})
            .then(async r => [r.status, (await r.arrayBuffer()).byteLength])
            .catch(e => [0, String(e)])))""" % (count, first)


def test_chromium_moves_on_after_goaway(qproxy_factory, backend_app, certificate):
    """max_requests_per_connection = 25: with its 25th request a connection
    gets GOAWAY, and Chromium takes its next fetch to a new connection. 60
    fetches one after another: every one gets its body, on three
    connections. (Not at once: a fetch that Chromium is binding to a
    connection as its GOAWAY arrives fails with ERR_CONNECTION_CLOSED,
    unsent and not retried, whatever stream ID the GOAWAY allows; streams
    the server refused, H3_REQUEST_REJECTED, it does retry.)"""
    q = qproxy_factory(sections=app_sections(
        backend_app.tcp_server, glob=[("max_requests_per_connection", "25")]))
    with Chromium("127.0.0.1:%d" % q.port, spki_hash(certificate[0]),
                  timeout=60 * SLOW) as c:
        assert not c.navigate("https://127.0.0.1:%d/app/status/200" % q.port).get("errorText")
        before = qproxy_stats(q)
        got = c.evaluate("""
            (async () => {
              const out = [];
              for (let i = 0; i < 60; i++) {
                const r = await fetch('/app/bytes/' + (1000 + i), {cache: 'no-store'});
                out.push([r.status, (await r.arrayBuffer()).byteLength]);
              }
              return out;
            })()""", timeout=60 * SLOW)
    after = qproxy_stats(q)
    assert got == [[200, 1000 + i] for i in range(60)], [g for g in got if g[0] != 200][:5]
    # the navigation and 60 fetches, 25 a connection: two more connections
    assert after["connections"]["total"] - before["connections"]["total"] == 2, after
    assert after["limits"]["goaway_max_requests"] - before["limits"]["goaway_max_requests"] \
        == 2, after["limits"]


def test_chromium_fetches_past_its_stream_credit(proxy, browser):
    """250 fetches at once, with max_streams_bidi at 100: qproxy gives
    stream credit back as streams end, and all of them come back whole on
    the one connection."""
    before = qproxy_stats(proxy)
    got = browser.evaluate(_fetch_sizes_js(0, 250), timeout=60 * SLOW)
    after = qproxy_stats(proxy)
    assert got == [[200, 1000 + i] for i in range(250)], [g for g in got if g[0] != 200][:5]
    assert after["connections"]["total"] == before["connections"]["total"]
    assert after["streams"]["total"] - before["streams"]["total"] >= 250
