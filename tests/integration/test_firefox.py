"""Firefox, whose HTTP/3 is Mozilla's own QUIC stack (neqo), through qproxy.

Headless Firefox loads one page and takes a screenshot of it once the
page's load event has fired (--screenshot). Its profile makes it speak
HTTP/3 to the test origin at once (an Alt-Svc mapping that its testing
preferences force) and trust the test certificate (an override by its
SHA-256 fingerprint). Nothing listens on TCP at that port, so whatever
reaches the backend came over QUIC through qproxy.
"""

import json
import os
import shutil
import subprocess

import pytest

from helpers import SLOW, app_sections, expected_sha256, qproxy_stats

MiB = 1024 * 1024


def firefox_binary():
    return shutil.which("firefox-esr") or shutil.which("firefox")


def _profile(directory, port, cert):
    """A Firefox profile for https://127.0.0.1:port over HTTP/3."""
    os.makedirs(directory)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    with open(cert, "rb") as f:
        fp = x509.load_pem_x509_certificate(f.read()).fingerprint(hashes.SHA256())
    with open(os.path.join(directory, "cert_override.txt"), "w") as f:
        f.write("# PRIVATE FILE\n127.0.0.1:%d:\tOID.2.16.840.1.101.3.4.2.1\t%s\t\n"
                % (port, ":".join("%02X" % b for b in fp)))
    prefs = {
        "network.http.http3.enable": True,
        "network.http.http3.alt-svc-mapping-for-testing": "127.0.0.1;h3=:%d" % port,
        "network.http.http3.force-use-alt-svc-mapping-for-testing": True,
        "network.http.http3.disable_when_third_party_roots_found": False,
        "browser.shell.checkDefaultBrowser": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "toolkit.telemetry.reportingpolicy.firstRun": False,
        "browser.startup.homepage_override.mstone": "ignore",
    }
    with open(os.path.join(directory, "user.js"), "w") as f:
        for k, v in prefs.items():
            f.write("user_pref(%s, %s);\n" % (json.dumps(k), json.dumps(v)))


def firefox_load(tmp_path, port, cert, url):
    """Loads url in a headless Firefox; returns its exit status and output."""
    binary = firefox_binary()
    if not binary:
        pytest.fail("firefox-esr is not installed (make deps installs it)", pytrace=False)
    prof = str(tmp_path / "firefox-profile")
    _profile(prof, port, cert)
    env = dict(os.environ, HOME=str(tmp_path), MOZ_CRASHREPORTER_DISABLE="1")
    p = subprocess.run([binary, "--headless", "--no-remote", "--profile", prof,
                        "--screenshot", str(tmp_path / "shot.png"), url],
                       capture_output=True, text=True, timeout=30 * SLOW, env=env)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def proxy(qproxy_factory, backend_app):
    return qproxy_factory(sections=app_sections(backend_app.tcp_server))


def test_firefox_downloads_and_uploads_through_qproxy(proxy, backend_app, certificate,
                                                       tmp_path):
    """A page whose script downloads 1 MiB and uploads what it got: the
    backend gets a body with the SHA-256 of the one it sent, from Firefox."""
    n = MiB + 7
    i0 = backend_app.count
    rc, out = firefox_load(tmp_path, proxy.port, certificate[0],
                           "https://127.0.0.1:%d/app/roundtrip/%d" % (proxy.port, n))
    assert rc == 0, out
    got = backend_app.requests_since(i0)
    seen = [(r["method"], r["path"]) for r in got]
    assert ("GET", "/app/roundtrip/%d" % n) in seen, seen
    assert ("GET", "/app/bytes/%d" % n) in seen, seen
    ups = [r for r in got if r["method"] == "POST" and r["path"] == "/app/upload"]
    assert len(ups) == 1, seen
    assert ups[0]["body_length"] == n and ups[0]["body_sha256"] == expected_sha256(n), ups[0]
    agents = {v for r in got for k, v in r["headers"] if k.lower() == "user-agent"}
    assert agents and all("Firefox/" in a for a in agents), agents
    via = {v for r in got for k, v in r["headers"] if k.lower() == "via"}
    assert via and all("qproxy" in v for v in via), via


def test_firefox_loads_a_page_of_many_images_on_one_connection(proxy, backend_app,
                                                               certificate, tmp_path):
    """A page of 150 images, more than the 100 streams a connection may
    have open: Firefox asks for every one before the page's load event,
    all on one QUIC connection."""
    n = 150
    before = qproxy_stats(proxy)
    i0 = backend_app.count
    rc, out = firefox_load(tmp_path, proxy.port, certificate[0],
                           "https://127.0.0.1:%d/app/images/%d" % (proxy.port, n))
    assert rc == 0, out
    after = qproxy_stats(proxy)
    gifs = sorted(int(r["path"].rsplit("/", 1)[1]) for r in backend_app.requests_since(i0)
                  if r["path"].startswith("/app/gif/"))
    assert gifs == list(range(n)), gifs
    assert after["connections"]["total"] - before["connections"]["total"] == 1, after
    assert after["requests"]["2xx"] - before["requests"]["2xx"] >= n + 1
