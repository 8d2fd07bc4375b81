#!/bin/sh
# Runs qproxy in the foreground on a demo configuration: a fresh self-signed
# certificate, UDP 127.0.0.1:4433, and a small demo web app behind it.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/demo/run"
port=4433
app=127.0.0.1:18080
mkdir -p "$run"
chmod 700 "$run"

if [ ! -f "$run/cert.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$run/key.pem" -out "$run/cert.pem" -days 30 \
	    -subj /CN=localhost \
	    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
	chmod 600 "$run/key.pem"
fi

cat >"$run/qproxy.conf" <<CONF
# qproxy demo configuration (written by scripts/demo.sh)
[global]
log_level = info
control_socket = $run/control.sock
secret_file = $run/secret
access_log = stderr

[listener demo]
address = 127.0.0.1:$port
certificate = $run/cert.pem
private_key = $run/key.pem

[backend app]
server = $app

[route all]
backend = app
CONF

/usr/bin/python3 "$top/scripts/demo-backend.py" --listen "$app" &
app_pid=$!
# Ctrl-C reaches qproxy too (same process group): it stops gracefully.
trap 'kill $app_pid 2>/dev/null || true' EXIT
trap ':' INT TERM
# The app must be up before qproxy sends it anything: asked for its page,
# as another program on the port would answer a connect too.
tries=0
until /usr/bin/python3 -c "import sys, urllib.request; sys.exit(b'qproxy demo' not in urllib.request.urlopen('http://$app/', timeout=1).read())" 2>/dev/null; do
	if ! kill -0 $app_pid 2>/dev/null || [ $tries -ge 50 ]; then
		echo "demo: the demo app could not start on $app (is the port in use?)" >&2
		exit 1
	fi
	tries=$((tries + 1))
	sleep 0.1
done
if ! kill -0 $app_pid 2>/dev/null; then
	echo "demo: the demo app exited; is $app used by another program?" >&2
	exit 1
fi

cat <<MSG

qproxy is starting on https://127.0.0.1:$port/ (HTTP/3 over UDP), in front
of a demo app on $app. Ask it from another terminal with:

  scripts/h3get -k -I https://127.0.0.1:$port/
  gtlsclient --exit-on-all-streams-close 127.0.0.1 $port https://localhost:$port/

and look at it with:

  build/qproxyctl -s $run/control.sock stats

Stop it with Ctrl-C (a graceful shutdown). Its configuration is
$run/qproxy.conf.

MSG
status=0
"$top/build/qproxy" -c "$run/qproxy.conf" || status=$?
# After "qproxyctl upgrade" the process started here exits once drained,
# and the one that took over serves on: the demo app stays while it does
# (Ctrl-C reaches it too).
while [ $status -eq 0 ] &&
    "$top/build/qproxyctl" -s "$run/control.sock" version >/dev/null 2>&1; do
	sleep 1
done
exit $status
