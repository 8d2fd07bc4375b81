/*
 * h3raw - a minimal HTTP/3 test client for qproxy's integration tests.
 *
 * It sends request field sections exactly as given on the command line
 * (including ones that real clients refuse to produce: uppercase names,
 * misplaced or duplicated pseudo-header fields, CR/LF/NUL in values, ...)
 * and reports what the server did with each request stream.
 *
 * Usage: h3raw [options] HOST PORT
 *   -H 'name: value'          add a request field line (in order, repeatable)
 *   -d N                      send a body of N bytes ('a'); default: no DATA
 *   --rest-after-head BYTES   send the first BYTES of the -d body, and the
 *                             rest once the final response head has come
 *   --fin-separate            HEADERS (and body/trailers) without FIN, then
 *                             an empty STREAM frame carrying FIN
 *   --no-fin                  as --fin-separate, but the FIN never goes: a
 *                             client that stops in the middle of its request
 *   --trailer 'name: value'   add a trailer field line (repeatable)
 *   -n COUNT                  send the request COUNT times in parallel
 *   --cancel                  reset each request stream (H3_REQUEST_CANCELLED)
 *                             as soon as its request (or its --raw bytes)
 *                             went out, as a "rapid reset" client does;
 *                             outcome "cancelled"
 *   --stop-sending            as --cancel, but with STOP_SENDING alone: the
 *                             request stands, its response is refused
 *   --reset-only              as --cancel, but with RESET_STREAM alone: the
 *                             request is given up, its response not refused
 *   --cancel-after BYTES      reset each request stream as --cancel does,
 *                             once its final response head and BYTES of
 *                             its body came (0: the head alone): a client
 *                             that leaves a tunnel; outcome "cancelled"
 *   --pause-after N           open N request streams, then wait --pause
 *                             seconds (default 1) before opening the rest:
 *                             with --cancel, two bursts of resets
 *   --pause SECONDS           the wait of --pause-after
 *   --deaf-pause              the pause of --pause-after begins once those
 *                             N requests have their outcomes (and 50 ms
 *                             more, for ACKs to go), and reads
 *                             nothing: what comes meanwhile waits in the
 *                             socket, read after the rest of the requests
 *                             went out (a client whose requests cross what
 *                             the server sent, a GOAWAY say); a line
 *                             "h3raw: paused" on stderr says it began
 *   --await-refusal           a request sent that a GOAWAY then covers gets
 *                             its outcome from the server (a reset, or the
 *                             connection's close: "goaway"), not from the
 *                             GOAWAY alone
 *   --uni-credit BYTES        the credit of each of the server's
 *                             unidirectional streams (control, QPACK), never
 *                             raised: a client that holds qproxy's QPACK
 *                             encoder stream to BYTES (its own encoder
 *                             then uses no dynamic table)
 *   --hold SECONDS            once every request stream is open, read no
 *                             datagram for SECONDS: those that come are kept,
 *                             unread and so unacknowledged (the server's
 *                             congestion window fills), then read at once
 *   --hold-drop K             of the datagrams kept, the K-th from the end
 *                             is dropped instead (1: the last): the server
 *                             finds that packet lost when the others are
 *                             acknowledged (K >= 4: by its packet threshold)
 *   --max-ack-delay MS        the max_ack_delay transport parameter (below
 *                             16384): the server's PTO, and its closing
 *                             period (three PTOs), grow by as much
 *   --qpack-blocked N         the streams the server may leave blocked on
 *                             QPACK table entries not yet received (100);
 *                             0: the server may name only entries this
 *                             client acknowledged
 *   --max-field-section BYTES the SETTINGS_MAX_FIELD_SECTION_SIZE sent
 *                             (by default nghttp3's 2^62-1, no limit in
 *                             effect): the largest field
 *                             section, as RFC 9114 4.2.2 counts, that the
 *                             server should send (this client reads larger
 *                             ones all the same)
 *   --drip BYTES              with --no-read: every half second, BYTES more
 *                             credit on each request stream, none on the
 *                             connection (nothing can move)
 *   --no-read                 never give the server flow-control credit
 *                             beyond small initial windows: a client that
 *                             reads nothing
 *   --raw HEX                 write these bytes (hex digits, spaces allowed)
 *                             on each request stream, with FIN, instead of
 *                             what nghttp3 would encode from -H: any HEADERS
 *                             frame or QPACK field section; the server's
 *                             answer on the stream is read and dropped.
 *                             An empty HEX: a stream of no bytes, its FIN
 *                             alone
 *   --raw-encoder HEX         write these bytes on the QPACK encoder stream
 *                             (after its stream type; nghttp3's own encoder
 *                             then uses no dynamic table): any encoder
 *                             instructions, such as a capacity the server
 *                             did not allow; what the server's QPACK
 *                             decoder stream says of them is not read (it
 *                             acknowledges entries nghttp3's encoder never
 *                             made)
 *   --tls-after HEX           once every request has its outcome, send these
 *                             bytes as TLS data (CRYPTO frames) in 1-RTT
 *                             packets, and wait for the server to close
 *                             the connection; a last line reports it:
 *                             "tls-after closed 0xCODE" or "tls-after open"
 *   --tls-at-handshake        send the --tls-after bytes as soon as the
 *                             handshake completes instead, in the first
 *                             1-RTT packet (with the client's Finished)
 *   --tls-in-handshake        as --tls-at-handshake, but in Handshake
 *                             packets: right after the client's Finished,
 *                             in the same CRYPTO stream
 *   --tls-after-hello HEX     send these bytes as TLS data in an Initial
 *                             packet of their own, right after the
 *                             ClientHello (as if a next message began)
 *   --flood KIND              once every request has its outcome, take
 *                             over the sending from ngtcp2 (with its 1-RTT
 *                             keys) and send --flood-packets 1-RTT packets
 *                             of KIND frames, --flood-rate a second, reading
 *                             nothing (datagrams that come are dropped); a
 *                             last line "flood sent N got M" counts the
 *                             packets sent and the datagrams that came.
 *                             KIND: ping (a lone PING a packet), padding
 *                             (PADDING alone), pings (a packet of PINGs),
 *                             path-challenge, new-cid (NEW_CONNECTION_ID,
 *                             each retiring those before it), retire-cid
 *                             (RETIRE_CONNECTION_ID of the server's IDs,
 *                             one a packet, in order), max-streams,
 *                             streams-blocked, max-data, data-blocked, ack
 *                             (ACK frames of many ranges, below the largest
 *                             packet number this client acknowledged);
 *                             on the control stream, after its SETTINGS:
 *                             ctrl-unknown (empty frames of a reserved
 *                             type), ctrl-huge (one reserved frame of
 *                             2^62-1 bytes, zeros), ctrl-priority
 *                             (PRIORITY_UPDATE frames for streams 0 to
 *                             60); bytewise: the --raw bytes on stream 4
 *                             (a second request), one byte a STREAM frame,
 *                             with FIN on the last (PINGs after them).
 *                             Within the server's first credit: the
 *                             MAX_DATA and MAX_STREAM_DATA that come are
 *                             not read
 *   --flood-packets N         the packets of --flood (10000)
 *   --flood-rate N            packets a second of --flood (5000)
 *   --sni NAME                TLS SNI (default: HOST)
 *   --session-file PATH       resume the TLS session kept in PATH, if there
 *                             is one, and keep there the session this
 *                             connection ends with (its last ticket); a
 *                             last line says "resumed yes" or "resumed no";
 *                             the server's transport parameters are kept
 *                             in PATH.tp, for --early
 *   --early                   with --session-file, send the requests in
 *                             0-RTT (early data) if the session allows it,
 *                             within the transport parameters in PATH.tp;
 *                             a server that rejects the early data fails
 *                             the connection
 *   --no-key-shares           offer no key share in the ClientHello: the
 *                             server must ask for one with a
 *                             HelloRetryRequest
 *   --alpn PROTO              the one ALPN protocol offered (default h3);
 *                             an empty PROTO offers no ALPN at all
 *   -t SECONDS                overall timeout (default 10); SIGTERM
 *                             ends it at once, as if it were over (a
 *                             client a test holds until it is done with it)
 *   --linger SECONDS          once every request has its outcome, stay
 *                             connected (answering the server) this long
 *                             before closing, within the -t timeout
 *   --lose-starts             never send a 1-RTT packet that carries the
 *                             first bytes of a request stream (STREAM
 *                             offset 0), nor any packet sent again with
 *                             them: the server never sees a request, and
 *                             holds what came after its start, out of
 *                             order (the rest of the traffic flows)
 *   --lose-resets             never send a 1-RTT packet that carries a
 *                             RESET_STREAM frame: a client that does not
 *                             heed the server's STOP_SENDING (ngtcp2 would
 *                             answer it with RESET_STREAM)
 *   --print-headers           print response fields as "< name: value"
 *   --print-body              print the response body after the status line
 *   --print-settings          a last line "settings connect-protocol N":
 *                             the server's SETTINGS_ENABLE_CONNECT_PROTOCOL
 *                             (RFC 8441 3), or "settings none" if its
 *                             SETTINGS never came
 *   --print-credit            a last line "credit left N": the connection
 *                             flow-control credit the server gave beyond
 *                             what this client sent (its MAX_DATA less the
 *                             stream bytes sent)
 *   -v                        ngtcp2 debug log and event notes on stderr
 *
 * In -H/--trailer arguments the name is the text before the first ": ",
 * the value is the rest.  Both are unescaped afterwards: \r \n \0 \\ \xHH.
 *
 * Output (stdout), one line per request, in request order:
 *   status S body N     final response status S, N body bytes received
 *   raw N               a --raw stream's answer came to its end (FIN),
 *                       N bytes of frames, unread
 *   reset 0xCODE        the server reset the stream or sent STOP_SENDING
 *   closed 0xCODE       the server closed the connection before an outcome
 *   local-reset 0xCODE  this client's HTTP/3 layer reset the stream (for
 *                       instance because the response was malformed)
 *   local-close 0xCODE  this client closed the connection because of an
 *                       error (for instance a protocol violation by the peer)
 *   goaway              the request was refused by a GOAWAY
 *   cancelled           this client reset the stream (--cancel)
 *   timeout             no outcome before the timeout
 * A complete response (final status, FIN received) wins over a later
 * RESET_STREAM/STOP_SENDING; a RESET_STREAM code wins over a STOP_SENDING
 * code.  A STOP_SENDING alone becomes the outcome after a 1 s grace period.
 * --print-headers lines (all field sections, trailers included) and the
 * --print-body bytes (plus a '\n' if the body does not end with one)
 * follow the request's line.
 * Exit status: 0 when every request got an outcome, 2 on handshake
 * failure or timeout, 1 on usage or local setup errors.
 */

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/quic.h>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>

#include <nghttp3/nghttp3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 1
#define EXIT_TIMEOUT 2

/* Delay between the last data of a --fin-separate stream and its FIN. */
#define FIN_SEPARATE_DELAY (20 * NGTCP2_MILLISECONDS)
/* How long to wait for the read side after a STOP_SENDING only. */
#define STOP_SENDING_GRACE (1000 * NGTCP2_MILLISECONDS)

typedef struct {
  uint8_t *data;
  size_t len, cap;
} buf_t;

typedef struct {
  uint8_t *name;
  size_t namelen;
  uint8_t *value;
  size_t valuelen;
} field_t;

typedef struct {
  field_t *v;
  size_t len, cap;
} fields_t;

typedef struct {
  size_t idx;
  int64_t stream_id;
  int opened;
  int submit_failed;

  /* send side */
  uint64_t body_offered;
  int fin_pending;
  int fin_sent; /* or the write side was aborted */
  ngtcp2_tstamp fin_due;

  /* receive side */
  int cur_status;
  int status;
  int have_final;
  uint64_t body_len;
  buf_t body;
  buf_t hdrs;
  int resp_complete;

  int reset_recv;
  uint64_t reset_code;
  int stop_recv;
  uint64_t stop_code;
  ngtcp2_tstamp stop_deadline;
  int local_err;
  uint64_t local_code;
  int closed;
  uint64_t close_code;
  int goaway;
  int cancel_due; /* --cancel: the request is out, reset it */
  int cancelled;
  int raw;        /* --raw: not nghttp3's stream */
  size_t raw_off; /* bytes of opt.raw written */
  uint64_t raw_recv; /* --raw: bytes of the server's answer read */
  int raw_fin;       /* and its end */

  int done;
} req_t;

enum { CANCEL_RESET = 1, CANCEL_STOP_SENDING = 2, CANCEL_RESET_ONLY = 3 };

static struct {
  const char *host;
  const char *port;
  const char *sni;
  const char *alpn;
  const char *session_file;
  int early;
  int no_key_shares;
  fields_t fields;
  fields_t trailers;
  int has_body;
  uint64_t body_size;
  int rest_after_head; /* the body past head_part waits for the head */
  uint64_t head_part;
  int fin_separate;
  int no_fin;
  size_t count;
  double timeout;
  double linger;
  int print_headers;
  int print_body;
  int print_credit;
  int print_settings;
  int cancel_after_set; /* --cancel-after */
  uint64_t cancel_after;
  int verbose;
  int cancel; /* CANCEL_RESET, CANCEL_STOP_SENDING, CANCEL_RESET_ONLY, 0 */
  int no_read;
  int lose_starts; /* --lose-starts */
  int lose_resets; /* --lose-resets */
  uint64_t drip; /* --drip: stream credit added every 0.5 s */
  int uni_credit_set;
  uint64_t max_ack_delay_ms; /* --max-ack-delay */
  double hold;      /* --hold: seconds */
  size_t hold_drop; /* --hold-drop: K-th kept datagram from the end, or 0 */
  size_t qpack_blocked; /* --qpack-blocked: SETTINGS_QPACK_BLOCKED_STREAMS */
  uint64_t max_field_section; /* --max-field-section, or 0: nghttp3's */
  uint64_t uni_credit; /* --uni-credit: the server's uni streams, for good */
  int qdec_credit_set;
  uint64_t qdec_credit; /* --qdec-credit: the server's decoder stream */
  size_t pause_after; /* --pause-after: streams opened before the pause */
  double pause;       /* --pause: its length, seconds */
  int deaf_pause;     /* --deaf-pause */
  int await_refusal;  /* --await-refusal */
  buf_t raw;
  int raw_set; /* --raw given, its bytes perhaps none */
  buf_t raw_encoder;
  buf_t tls_after;
  buf_t tls_after_hello;
  int tls_at_handshake;
  ngtcp2_encryption_level tls_level;
  const char *flood;     /* --flood KIND */
  uint64_t flood_packets;
  uint64_t flood_rate;
} opt;

static struct {
  int fd;
  struct sockaddr_storage local_addr;
  socklen_t local_addrlen;
  struct sockaddr_storage remote_addr;
  socklen_t remote_addrlen;

  WOLFSSL_CTX *ssl_ctx;
  WOLFSSL *ssl;
  ngtcp2_crypto_conn_ref conn_ref;
  ngtcp2_conn *conn;
  nghttp3_conn *h3;

  nghttp3_nv *nva;
  size_t nvlen;
  nghttp3_nv *tnva;
  size_t tnvlen;

  req_t *reqs;
  size_t next_req;

  int hs_done;
  int early; /* --early: the session allows 0-RTT, its parameters in tp */
  uint8_t tp[1024];
  size_t tplen;
  int lose_packet; /* --lose-starts: the packet just sealed goes nowhere */
  uint64_t lost_starts;
  int tls_after_sent;
  ngtcp2_tstamp linger_until; /* 0: not lingering (yet) */
  ngtcp2_tstamp drip_next;    /* --drip: when credit is added next */
  ngtcp2_tstamp resume_at;    /* --pause-after: when opening goes on */
  ngtcp2_tstamp deaf_from;    /* --deaf-pause: when reading stops */
  int hold_state;             /* --hold: 0 not yet, 1 holding, 2 over */
  ngtcp2_tstamp hold_until;
  buf_t *held;                /* the datagrams kept */
  size_t nheld;
  ngtcp2_ccerr last_error;
  int conn_dead; /* no more I/O on the connection */
  int peer_closed;
  uint64_t peer_close_code;
  int local_closed;
  uint64_t local_close_code;
  int idle_closed;
  int settings_seen;      /* the server's SETTINGS came */
  int connect_protocol;   /* and their SETTINGS_ENABLE_CONNECT_PROTOCOL */
  int64_t peer_ctrl;      /* the server's control stream, once seen */
  buf_t ctrl_head;        /* its first bytes, until SETTINGS are whole */

  int64_t qenc;          /* the QPACK encoder stream */
  int64_t peer_qdec;     /* the server's QPACK decoder stream, once seen */
  uint64_t qenc_h3_len;  /* bytes nghttp3 wrote on it */
  size_t qenc_raw_off;   /* --raw-encoder bytes written after them */

  /* --flood: the 1-RTT keys and header of the last packet ngtcp2 sealed */
  int tx_keys;           /* the fields below are set */
  int tx_last_1rtt;      /* the packet being sealed is 1-RTT */
  ngtcp2_crypto_aead tx_aead;
  ngtcp2_crypto_aead_ctx tx_aead_ctx;
  ngtcp2_crypto_cipher tx_hp;
  ngtcp2_crypto_cipher_ctx tx_hp_ctx;
  uint8_t tx_iv[32];
  size_t tx_ivlen;
  uint8_t tx_hdr[1 + NGTCP2_MAX_CIDLEN]; /* first byte, DCID */
  size_t tx_hdrlen;
  uint64_t tx_pn;
  uint64_t rx_largest; /* the largest server packet number acknowledged */
  uint64_t stream_end[4]; /* the end of what went on streams 0, 4, 8, 12 */
} c;

static uint8_t abody[16384];
/* SIGTERM came: the -t timeout is over (taken only in ppoll) */
static volatile sig_atomic_t terminated;

static void on_sigterm(int sig) {
  (void)sig;
  terminated = 1;
}

static void die_usage(const char *fmt, ...)
  __attribute__((format(printf, 1, 2), noreturn));

static void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("h3raw: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\nusage: h3raw [-H 'name: value']... [-d N] [--fin-separate | --no-fin] "
        "[--trailer 'name: value']... [-n COUNT] [--cancel] [--stop-sending] "
        "[--no-read] [--drip BYTES] [--pause-after N [--pause SECONDS] [--deaf-pause]] [--await-refusal] "
        "[--uni-credit BYTES] [--qdec-credit BYTES] [--qpack-blocked N] "
        "[--max-field-section BYTES] "
        "[--max-ack-delay MS] "
        "[--hold SECONDS [--hold-drop K]] "
        "[--raw HEX] [--raw-encoder HEX] [--sni NAME] [--alpn PROTO] "
        "[--session-file PATH [--early]] "
        "[-t SECONDS] [--linger SECONDS] "
        "[--print-headers] [--print-body] [--print-credit] [-v] HOST PORT\n",
        stderr);
  exit(EXIT_USAGE);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...) {
  va_list ap;
  if (!opt.verbose) {
    return;
  }
  va_start(ap, fmt);
  fputs("h3raw: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void warnx_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("h3raw: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (q == NULL) {
    fputs("h3raw: out of memory\n", stderr);
    exit(EXIT_USAGE);
  }
  return q;
}

static void buf_append(buf_t *b, const void *data, size_t len) {
  if (len == 0) {
    return;
  }
  if (b->len + len > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + len) {
      ncap *= 2;
    }
    b->data = xrealloc(b->data, ncap);
    b->cap = ncap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

static ngtcp2_tstamp timestamp(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static void random_bytes(uint8_t *dest, size_t len) {
  while (len > 0) {
    ssize_t n = getrandom(dest, len, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      /* Should not happen; fall back to something non-constant. */
      for (size_t i = 0; i < len; ++i) {
        dest[i] = (uint8_t)random();
      }
      return;
    }
    dest += n;
    len -= (size_t)n;
  }
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') {
    return ch - '0';
  }
  if (ch >= 'a' && ch <= 'f') {
    return ch - 'a' + 10;
  }
  if (ch >= 'A' && ch <= 'F') {
    return ch - 'A' + 10;
  }
  return -1;
}

/* Decodes \r \n \0 \\ \xHH; any other backslash sequence is kept as is. */
static uint8_t *unescape(const char *s, size_t len, size_t *outlen) {
  uint8_t *out = xrealloc(NULL, len + 1);
  size_t o = 0;

  for (size_t i = 0; i < len; ++i) {
    if (s[i] != '\\' || i + 1 >= len) {
      out[o++] = (uint8_t)s[i];
      continue;
    }
    switch (s[i + 1]) {
    case 'r':
      out[o++] = '\r';
      ++i;
      break;
    case 'n':
      out[o++] = '\n';
      ++i;
      break;
    case '0':
      out[o++] = '\0';
      ++i;
      break;
    case '\\':
      out[o++] = '\\';
      ++i;
      break;
    case 'x':
      if (i + 3 < len && hexval((unsigned char)s[i + 2]) >= 0 &&
          hexval((unsigned char)s[i + 3]) >= 0) {
        out[o++] = (uint8_t)(hexval((unsigned char)s[i + 2]) * 16 +
                             hexval((unsigned char)s[i + 3]));
        i += 3;
      } else {
        out[o++] = '\\';
      }
      break;
    default:
      out[o++] = '\\';
      break;
    }
  }
  out[o] = '\0';
  *outlen = o;
  return out;
}

static void fields_add(fields_t *f, const char *arg, const char *what) {
  const char *sep = strstr(arg, ": ");
  size_t namelen;
  const char *value;
  field_t *fl;

  if (sep) {
    namelen = (size_t)(sep - arg);
    value = sep + 2;
  } else {
    size_t len = strlen(arg);
    if (len == 0 || arg[len - 1] != ':') {
      die_usage("%s argument must look like 'name: value': %s", what, arg);
    }
    /* "name:" means an empty value */
    namelen = len - 1;
    value = arg + len;
  }

  if (f->len == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 8;
    f->v = xrealloc(f->v, f->cap * sizeof(*f->v));
  }
  fl = &f->v[f->len++];
  fl->name = unescape(arg, namelen, &fl->namelen);
  fl->value = unescape(value, strlen(value), &fl->valuelen);
}

static void fields_add_raw(fields_t *f, const char *name, const char *value) {
  field_t *fl;
  if (f->len == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 8;
    f->v = xrealloc(f->v, f->cap * sizeof(*f->v));
  }
  fl = &f->v[f->len++];
  fl->namelen = strlen(name);
  fl->name = (uint8_t *)strdup(name);
  fl->valuelen = strlen(value);
  fl->value = (uint8_t *)strdup(value);
  if (!fl->name || !fl->value) {
    die_usage("out of memory");
  }
}

static unsigned long long parse_ull(const char *s, const char *what) {
  char *end;
  unsigned long long v;
  errno = 0;
  if (*s == '-' || *s == '\0') {
    die_usage("bad %s: %s", what, s);
  }
  v = strtoull(s, &end, 10);
  if (errno || *end) {
    die_usage("bad %s: %s", what, s);
  }
  return v;
}

/* A number of seconds above 0, such as 1.5. */
static double parse_seconds(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (*end || !(v > 0)) {
    die_usage("bad %s: %s", what, s);
  }
  return v;
}

/* Hex digits, white space ignored, into b; none only when empty_ok. */
static void parse_hex(const char *s, buf_t *b, int empty_ok) {
  int hi = -1;

  for (; *s; ++s) {
    int d;
    if (*s == ' ' || *s == '\t') {
      continue;
    }
    if (*s >= '0' && *s <= '9') {
      d = *s - '0';
    } else if ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'f') {
      d = (*s | 0x20) - 'a' + 10;
    } else {
      die_usage("--raw: not a hex digit: '%c'", *s);
    }
    if (hi < 0) {
      hi = d;
    } else {
      uint8_t v = (uint8_t)(hi << 4 | d);
      buf_append(b, &v, 1);
      hi = -1;
    }
  }
  if (hi >= 0 || (b->len == 0 && !empty_ok)) {
    die_usage("--raw wants whole bytes of hex digits");
  }
}

static void parse_args(int argc, char **argv) {
  const char *pos[2];
  size_t npos = 0;
  int no_more_opts = 0;

  opt.count = 1;
  opt.timeout = 10;
  opt.pause = 1;
  opt.qpack_blocked = 100;
  opt.alpn = "h3";
  opt.tls_level = NGTCP2_ENCRYPTION_LEVEL_1RTT;
  opt.flood_packets = 10000;
  opt.flood_rate = 5000;
  c.qenc = -1;
  c.peer_qdec = -1;
  c.peer_ctrl = -1;

  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;

    if (no_more_opts || a[0] != '-' || a[1] == '\0') {
      if (npos == 2) {
        die_usage("too many arguments");
      }
      pos[npos++] = a;
      continue;
    }
#define NEED_ARG()                                                             \
  do {                                                                         \
    if (!next) {                                                               \
      die_usage("option %s needs an argument", a);                            \
    }                                                                          \
    ++i;                                                                       \
  } while (0)
    if (strcmp(a, "--") == 0) {
      no_more_opts = 1;
    } else if (strcmp(a, "-H") == 0) {
      NEED_ARG();
      fields_add(&opt.fields, next, "-H");
    } else if (strcmp(a, "--trailer") == 0) {
      NEED_ARG();
      fields_add(&opt.trailers, next, "--trailer");
    } else if (strcmp(a, "-d") == 0) {
      NEED_ARG();
      opt.has_body = 1;
      opt.body_size = parse_ull(next, "body size");
    } else if (strcmp(a, "--rest-after-head") == 0) {
      NEED_ARG();
      opt.rest_after_head = 1;
      opt.head_part = parse_ull(next, "bytes before the head");
    } else if (strcmp(a, "--fin-separate") == 0) {
      opt.fin_separate = 1;
    } else if (strcmp(a, "--linger") == 0) {
      NEED_ARG();
      opt.linger = parse_seconds(next, "linger");
    } else if (strcmp(a, "--no-fin") == 0) {
      opt.fin_separate = 1;
      opt.no_fin = 1;
    } else if (strcmp(a, "-n") == 0) {
      NEED_ARG();
      opt.count = (size_t)parse_ull(next, "count");
      if (opt.count == 0 || opt.count > 100000) {
        die_usage("bad count: %s", next);
      }
    } else if (strcmp(a, "--cancel") == 0) {
      opt.cancel = CANCEL_RESET;
    } else if (strcmp(a, "--stop-sending") == 0) {
      opt.cancel = CANCEL_STOP_SENDING;
    } else if (strcmp(a, "--reset-only") == 0) {
      opt.cancel = CANCEL_RESET_ONLY;
    } else if (strcmp(a, "--cancel-after") == 0) {
      NEED_ARG();
      opt.cancel_after_set = 1;
      opt.cancel_after = parse_ull(next, "bytes before the cancel");
    } else if (strcmp(a, "--no-read") == 0) {
      opt.no_read = 1;
    } else if (strcmp(a, "--lose-starts") == 0) {
      opt.lose_starts = 1;
    } else if (strcmp(a, "--lose-resets") == 0) {
      opt.lose_resets = 1;
    } else if (strcmp(a, "--pause-after") == 0) {
      NEED_ARG();
      opt.pause_after = (size_t)parse_ull(next, "pause-after");
    } else if (strcmp(a, "--pause") == 0) {
      NEED_ARG();
      opt.pause = parse_seconds(next, "pause");
    } else if (strcmp(a, "--deaf-pause") == 0) {
      opt.deaf_pause = 1;
    } else if (strcmp(a, "--await-refusal") == 0) {
      opt.await_refusal = 1;
    } else if (strcmp(a, "--hold") == 0) {
      NEED_ARG();
      opt.hold = parse_seconds(next, "hold");
    } else if (strcmp(a, "--hold-drop") == 0) {
      NEED_ARG();
      opt.hold_drop = (size_t)parse_ull(next, "hold-drop");
    } else if (strcmp(a, "--max-ack-delay") == 0) {
      NEED_ARG();
      opt.max_ack_delay_ms = parse_ull(next, "max-ack-delay");
      if (opt.max_ack_delay_ms >= 1 << 14) {
        die_usage("bad max-ack-delay: %s", next);
      }
    } else if (strcmp(a, "--qpack-blocked") == 0) {
      NEED_ARG();
      opt.qpack_blocked = (size_t)parse_ull(next, "qpack-blocked");
    } else if (strcmp(a, "--max-field-section") == 0) {
      NEED_ARG();
      opt.max_field_section = parse_ull(next, "max-field-section");
      if (opt.max_field_section == 0) {
        die_usage("bad max-field-section: %s", next);
      }
    } else if (strcmp(a, "--uni-credit") == 0) {
      NEED_ARG();
      opt.uni_credit = parse_ull(next, "uni-credit");
      opt.uni_credit_set = 1;
    } else if (strcmp(a, "--qdec-credit") == 0) {
      NEED_ARG();
      opt.qdec_credit = parse_ull(next, "qdec-credit");
      /* the stream's type byte tells which stream it is */
      if (opt.qdec_credit == 0) {
        die_usage("bad qdec-credit: %s", next);
      }
      opt.qdec_credit_set = 1;
    } else if (strcmp(a, "--drip") == 0) {
      NEED_ARG();
      opt.drip = parse_ull(next, "drip");
    } else if (strcmp(a, "--raw") == 0) {
      NEED_ARG();
      parse_hex(next, &opt.raw, 1);
      opt.raw_set = 1;
    } else if (strcmp(a, "--raw-encoder") == 0) {
      NEED_ARG();
      parse_hex(next, &opt.raw_encoder, 0);
    } else if (strcmp(a, "--flood") == 0) {
      NEED_ARG();
      opt.flood = next;
    } else if (strcmp(a, "--flood-packets") == 0) {
      NEED_ARG();
      opt.flood_packets = parse_ull(next, a);
    } else if (strcmp(a, "--flood-rate") == 0) {
      NEED_ARG();
      opt.flood_rate = parse_ull(next, a);
    } else if (strcmp(a, "--tls-after") == 0) {
      NEED_ARG();
      parse_hex(next, &opt.tls_after, 0);
    } else if (strcmp(a, "--tls-after-hello") == 0) {
      NEED_ARG();
      parse_hex(next, &opt.tls_after_hello, 0);
    } else if (strcmp(a, "--tls-at-handshake") == 0) {
      opt.tls_at_handshake = 1;
    } else if (strcmp(a, "--tls-in-handshake") == 0) {
      opt.tls_at_handshake = 1;
      opt.tls_level = NGTCP2_ENCRYPTION_LEVEL_HANDSHAKE;
    } else if (strcmp(a, "--sni") == 0) {
      NEED_ARG();
      opt.sni = next;
    } else if (strcmp(a, "--session-file") == 0) {
      NEED_ARG();
      opt.session_file = next;
    } else if (strcmp(a, "--early") == 0) {
      opt.early = 1;
    } else if (strcmp(a, "--no-key-shares") == 0) {
      opt.no_key_shares = 1;
    } else if (strcmp(a, "--alpn") == 0) {
      NEED_ARG();
      if (strlen(next) > 255) {
        die_usage("--alpn: too long");
      }
      opt.alpn = next;
    } else if (strcmp(a, "-t") == 0) {
      NEED_ARG();
      opt.timeout = parse_seconds(next, "timeout");
    } else if (strcmp(a, "--print-headers") == 0) {
      opt.print_headers = 1;
    } else if (strcmp(a, "--print-credit") == 0) {
      opt.print_credit = 1;
    } else if (strcmp(a, "--print-settings") == 0) {
      opt.print_settings = 1;
    } else if (strcmp(a, "--print-body") == 0) {
      opt.print_body = 1;
    } else if (strcmp(a, "-v") == 0) {
      opt.verbose = 1;
    } else {
      die_usage("unknown option: %s", a);
    }
#undef NEED_ARG
  }

  if (npos != 2) {
    die_usage("HOST and PORT are required");
  }
  if (opt.early && opt.session_file == NULL) {
    die_usage("--early needs --session-file");
  }
  opt.host = pos[0];
  opt.port = pos[1];
  if (!opt.sni) {
    opt.sni = opt.host;
  }

  if (opt.fields.len == 0) {
    char authority[512];
    if (strchr(opt.host, ':')) {
      snprintf(authority, sizeof(authority), "[%s]:%s", opt.host, opt.port);
    } else {
      snprintf(authority, sizeof(authority), "%s:%s", opt.host, opt.port);
    }
    fields_add_raw(&opt.fields, ":method", "GET");
    fields_add_raw(&opt.fields, ":scheme", "https");
    fields_add_raw(&opt.fields, ":authority", authority);
    fields_add_raw(&opt.fields, ":path", "/");
  }
}

/* NO_COPY_NAME matters: when nghttp3 copies a name it lowercases it, and
   this tool must send names verbatim.  The storage lives until exit. */
static nghttp3_nv *make_nva(const fields_t *f) {
  nghttp3_nv *nva = xrealloc(NULL, f->len * sizeof(*nva));
  for (size_t i = 0; i < f->len; ++i) {
    nva[i].name = f->v[i].name;
    nva[i].namelen = f->v[i].namelen;
    nva[i].value = f->v[i].value;
    nva[i].valuelen = f->v[i].valuelen;
    nva[i].flags = NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE;
  }
  return nva;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static req_t *req_by_stream(int64_t stream_id) {
  size_t idx;
  if (stream_id < 0 || !ngtcp2_is_bidi_stream(stream_id) ||
      (stream_id & 0x1) /* server-initiated */) {
    return NULL;
  }
  idx = (size_t)(stream_id >> 2);
  if (idx >= c.next_req || c.reqs[idx].stream_id != stream_id) {
    return NULL;
  }
  return &c.reqs[idx];
}

static void req_update(req_t *r, ngtcp2_tstamp now) {
  if (r->done) {
    return;
  }
  if (r->submit_failed || (r->goaway && !opt.await_refusal) ||
      r->reset_recv || r->local_err || r->closed || r->cancelled) {
    r->done = 1;
  } else if (r->resp_complete &&
             (!opt.fin_separate || r->fin_sent || opt.no_fin)) {
    r->done = 1;
  } else if (r->stop_recv && now >= r->stop_deadline) {
    r->done = 1;
  }
  if (r->done) {
    note("request %zu (stream %" PRId64 ") has an outcome", r->idx,
         r->stream_id);
  }
}

static int all_done(void) {
  ngtcp2_tstamp now = timestamp();
  int done = 1;
  for (size_t i = 0; i < opt.count; ++i) {
    req_update(&c.reqs[i], now);
    if (!c.reqs[i].done) {
      done = 0;
    }
  }
  return done;
}

static nghttp3_ssize read_data(nghttp3_conn *conn, int64_t stream_id,
                               nghttp3_vec *vec, size_t veccnt,
                               uint32_t *pflags, void *user_data,
                               void *stream_user_data) {
  req_t *r = stream_user_data;
  uint32_t eof_flags = NGHTTP3_DATA_FLAG_EOF;
  size_t n = 0;

  if (opt.trailers.len) {
    eof_flags |= NGHTTP3_DATA_FLAG_NO_END_STREAM;
  }

  if (r && opt.has_body && opt.rest_after_head && !r->have_final &&
      r->body_offered >= opt.head_part &&
      r->body_offered < opt.body_size) {
    return NGHTTP3_ERR_WOULDBLOCK; /* h3_end_headers resumes it */
  }
  if (r && opt.has_body && r->body_offered < opt.body_size && veccnt > 0) {
    uint64_t left = opt.body_size - r->body_offered;
    if (opt.rest_after_head && !r->have_final &&
        left > opt.head_part - r->body_offered) {
      left = opt.head_part - r->body_offered;
    }
    size_t len = left < sizeof(abody) ? (size_t)left : sizeof(abody);
    vec[0].base = abody;
    vec[0].len = len;
    r->body_offered += len;
    n = 1;
  }

  if (!r || !opt.has_body || r->body_offered >= opt.body_size) {
    *pflags |= eof_flags;
  }

  return (nghttp3_ssize)n;
}

static void open_streams(void) {
  if (!c.h3 || !(c.hs_done || c.early) || c.conn_dead) {
    return;
  }

  while (c.next_req < opt.count) {
    req_t *r = &c.reqs[c.next_req];

    if (opt.pause_after > 0 && c.next_req == opt.pause_after) {
      if (c.resume_at == 0) {
        if (opt.deaf_pause) {
          for (size_t i = 0; i < c.next_req; ++i) {
            if (!c.reqs[i].done) {
              return;
            }
          }
          /* deaf once the server has its ACKs (max_ack_delay) */
          c.deaf_from = timestamp() + 50 * NGTCP2_MILLISECONDS;
        }
        c.resume_at = (c.deaf_from ? c.deaf_from : timestamp()) +
                      (ngtcp2_tstamp)(opt.pause * NGTCP2_SECONDS);
        note("%zu streams opened; pausing", c.next_req);
      }
      if (timestamp() < c.resume_at) {
        return;
      }
    }
    int64_t stream_id;
    int rv;
    nghttp3_data_reader dr = {.read_data = read_data};
    int need_dr = opt.has_body || opt.trailers.len > 0;

    rv = ngtcp2_conn_open_bidi_stream(c.conn, &stream_id, r);
    if (rv != 0) {
      /* NGTCP2_ERR_STREAM_ID_BLOCKED: wait for MAX_STREAMS */
      return;
    }

    r->stream_id = stream_id;
    r->opened = 1;
    ++c.next_req;

    note("request %zu on stream %" PRId64, r->idx, stream_id);

    if (opt.raw_set) {
      r->raw = 1; /* write_raw() sends it */
      continue;
    }
    rv = nghttp3_conn_submit_request(c.h3, stream_id, c.nva, c.nvlen,
                                     need_dr ? &dr : NULL, r);
    if (rv == 0 && opt.trailers.len) {
      rv = nghttp3_conn_submit_trailers(c.h3, stream_id, c.tnva, c.tnvlen);
    }
    if (rv != 0) {
      warnx_("nghttp3_conn_submit_request(stream %" PRId64 "): %s", stream_id,
             nghttp3_strerror(rv));
      if (rv == NGHTTP3_ERR_CONN_CLOSING) {
        r->goaway = 1;
      } else {
        r->submit_failed = 1;
      }
      ngtcp2_conn_shutdown_stream(c.conn, 0, stream_id,
                                  NGHTTP3_H3_REQUEST_CANCELLED);
    }
  }
}

/* ------------------------------------------------------------------ */
/* nghttp3 callbacks                                                   */

static void h3_consume(int64_t stream_id, size_t n) {
  if (opt.no_read) {
    return;
  }
  if ((opt.uni_credit_set && !ngtcp2_is_bidi_stream(stream_id)) ||
      (opt.qdec_credit_set && stream_id == c.peer_qdec)) {
    ngtcp2_conn_extend_max_offset(c.conn, n); /* the stream's, never */
    return;
  }
  ngtcp2_conn_extend_max_stream_offset(c.conn, stream_id, n);
  ngtcp2_conn_extend_max_offset(c.conn, n);
}

static int h3_acked_stream_data(nghttp3_conn *conn, int64_t stream_id,
                                uint64_t datalen, void *user_data,
                                void *stream_user_data) {
  return 0;
}

static int h3_stream_close(nghttp3_conn *conn, int64_t stream_id,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  if (!ngtcp2_is_bidi_stream(stream_id) &&
      !ngtcp2_conn_is_local_stream(c.conn, stream_id)) {
    ngtcp2_conn_extend_max_streams_uni(c.conn, 1);
  }
  return 0;
}

static int h3_recv_data(nghttp3_conn *conn, int64_t stream_id,
                        const uint8_t *data, size_t datalen, void *user_data,
                        void *stream_user_data) {
  req_t *r = stream_user_data;
  if (r) {
    r->body_len += datalen;
    if (opt.print_body) {
      buf_append(&r->body, data, datalen);
    }
    if (opt.cancel_after_set && r->have_final &&
        r->body_len >= opt.cancel_after) {
      r->cancel_due = 1;
    }
  }
  h3_consume(stream_id, datalen);
  return 0;
}

static int h3_deferred_consume(nghttp3_conn *conn, int64_t stream_id,
                               size_t consumed, void *user_data,
                               void *stream_user_data) {
  h3_consume(stream_id, consumed);
  return 0;
}

static int h3_begin_headers(nghttp3_conn *conn, int64_t stream_id,
                            void *user_data, void *stream_user_data) {
  req_t *r = stream_user_data;
  if (r) {
    r->cur_status = 0;
  }
  return 0;
}

static int h3_recv_header(nghttp3_conn *conn, int64_t stream_id, int32_t token,
                          nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                          uint8_t flags, void *user_data,
                          void *stream_user_data) {
  req_t *r = stream_user_data;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
  nghttp3_vec v = nghttp3_rcbuf_get_buf(value);

  if (!r) {
    return 0;
  }
  if (n.len == 7 && memcmp(n.base, ":status", 7) == 0) {
    int st = 0;
    for (size_t i = 0; i < v.len && i < 3; ++i) {
      if (v.base[i] < '0' || v.base[i] > '9') {
        st = 0;
        break;
      }
      st = st * 10 + (v.base[i] - '0');
    }
    r->cur_status = st;
  }
  if (opt.print_headers) {
    buf_append(&r->hdrs, "< ", 2);
    buf_append(&r->hdrs, n.base, n.len);
    buf_append(&r->hdrs, ": ", 2);
    buf_append(&r->hdrs, v.base, v.len);
    buf_append(&r->hdrs, "\n", 1);
  }
  return 0;
}

static int h3_end_headers(nghttp3_conn *conn, int64_t stream_id, int fin,
                          void *user_data, void *stream_user_data) {
  req_t *r = stream_user_data;
  if (r && r->cur_status >= 200) {
    r->status = r->cur_status;
    r->have_final = 1;
    if (opt.cancel_after_set && opt.cancel_after == 0) {
      r->cancel_due = 1;
    }
    if (opt.rest_after_head) {
      nghttp3_conn_resume_stream(conn, stream_id);
    }
  }
  return 0;
}

static int h3_begin_trailers(nghttp3_conn *conn, int64_t stream_id,
                             void *user_data, void *stream_user_data) {
  return 0;
}

static int h3_recv_trailer(nghttp3_conn *conn, int64_t stream_id,
                           int32_t token, nghttp3_rcbuf *name,
                           nghttp3_rcbuf *value, uint8_t flags,
                           void *user_data, void *stream_user_data) {
  req_t *r = stream_user_data;
  if (r && opt.print_headers) {
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    buf_append(&r->hdrs, "< ", 2);
    buf_append(&r->hdrs, n.base, n.len);
    buf_append(&r->hdrs, ": ", 2);
    buf_append(&r->hdrs, v.base, v.len);
    buf_append(&r->hdrs, "\n", 1);
  }
  return 0;
}

static int h3_end_trailers(nghttp3_conn *conn, int64_t stream_id, int fin,
                           void *user_data, void *stream_user_data) {
  return 0;
}

static int h3_end_stream(nghttp3_conn *conn, int64_t stream_id,
                         void *user_data, void *stream_user_data) {
  req_t *r = stream_user_data;
  if (r) {
    r->resp_complete = 1;
    note("stream %" PRId64 ": response complete", stream_id);
  }
  return 0;
}

/* nghttp3 asks us to stop reading (the response was malformed, ...) */
static int h3_stop_sending(nghttp3_conn *conn, int64_t stream_id,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  req_t *r = req_by_stream(stream_id);
  int rv;
  if (r && !r->local_err) {
    r->local_err = 1;
    r->local_code = app_error_code;
  }
  note("stream %" PRId64 ": local STOP_SENDING 0x%" PRIx64, stream_id,
       app_error_code);
  rv = ngtcp2_conn_shutdown_stream_read(c.conn, 0, stream_id, app_error_code);
  if (rv != 0 && rv != NGTCP2_ERR_STREAM_NOT_FOUND) {
    return NGHTTP3_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int h3_reset_stream(nghttp3_conn *conn, int64_t stream_id,
                           uint64_t app_error_code, void *user_data,
                           void *stream_user_data) {
  req_t *r = req_by_stream(stream_id);
  int rv;
  if (r && !r->local_err) {
    r->local_err = 1;
    r->local_code = app_error_code;
  }
  note("stream %" PRId64 ": local RESET_STREAM 0x%" PRIx64, stream_id,
       app_error_code);
  rv = ngtcp2_conn_shutdown_stream_write(c.conn, 0, stream_id, app_error_code);
  if (rv != 0 && rv != NGTCP2_ERR_STREAM_NOT_FOUND) {
    return NGHTTP3_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int h3_shutdown(nghttp3_conn *conn, int64_t id, void *user_data) {
  note("GOAWAY received, id %" PRId64, id);
  for (size_t i = 0; i < c.next_req; ++i) {
    req_t *r = &c.reqs[i];
    if (!r->done && r->stream_id >= id && !r->resp_complete &&
        !r->reset_recv) {
      r->goaway = 1;
    }
  }
  return 0;
}

static int h3_recv_settings(nghttp3_conn *conn,
                            const nghttp3_settings *settings,
                            void *user_data) {
  return 0;
}

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v);

/* --print-settings: the server's SETTINGS frame, read from the first
   bytes of its control stream, once whole. nghttp3 1.8 keeps no
   SETTINGS_ENABLE_CONNECT_PROTOCOL (0x08) a client receives. */
static void parse_settings(void) {
  const uint8_t *p = c.ctrl_head.data;
  size_t len = c.ctrl_head.len, off = 0, end;
  uint64_t type, ftype, flen, id, value;

  if (read_varint(p, len, &off, &type) != 0 ||
      read_varint(p, len, &off, &ftype) != 0 ||
      read_varint(p, len, &off, &flen) != 0 || len - off < flen) {
    return;
  }
  c.settings_seen = 1;
  if (type != 0x00 || ftype != 0x04) {
    c.connect_protocol = -1; /* no SETTINGS first: nghttp3 fails it */
    return;
  }
  end = off + (size_t)flen;
  while (read_varint(p, end, &off, &id) == 0 &&
         read_varint(p, end, &off, &value) == 0) {
    if (id == 0x08) {
      c.connect_protocol = (int)value;
    }
  }
}

static int setup_h3(void) {
  nghttp3_callbacks callbacks = {
    .acked_stream_data = h3_acked_stream_data,
    .stream_close = h3_stream_close,
    .recv_data = h3_recv_data,
    .deferred_consume = h3_deferred_consume,
    .begin_headers = h3_begin_headers,
    .recv_header = h3_recv_header,
    .end_headers = h3_end_headers,
    .begin_trailers = h3_begin_trailers,
    .recv_trailer = h3_recv_trailer,
    .end_trailers = h3_end_trailers,
    .stop_sending = h3_stop_sending,
    .end_stream = h3_end_stream,
    .reset_stream = h3_reset_stream,
    .shutdown = h3_shutdown,
    .recv_settings = h3_recv_settings,
  };
  nghttp3_settings settings;
  int64_t ctrl, qenc, qdec;
  int rv;

  if (c.h3) {
    return 0;
  }
  if (ngtcp2_conn_get_streams_uni_left(c.conn) < 3) {
    warnx_("peer does not allow 3 unidirectional streams");
    return -1;
  }

  nghttp3_settings_default(&settings);
  settings.qpack_max_dtable_capacity = 4096;
  settings.qpack_blocked_streams = opt.qpack_blocked;
  if (opt.max_field_section > 0) {
    settings.max_field_section_size = opt.max_field_section;
  }
  /* --uni-credit: the server's decoder stream is held too; give it nothing
     to say */
  if (opt.raw_encoder.len > 0 || opt.uni_credit_set) {
    settings.qpack_encoder_max_dtable_capacity = 0;
  }

  rv = nghttp3_conn_client_new(&c.h3, &callbacks, &settings,
                               nghttp3_mem_default(), NULL);
  if (rv != 0) {
    warnx_("nghttp3_conn_client_new: %s", nghttp3_strerror(rv));
    return -1;
  }
  /* Our QPACK decoder's acknowledgments wait in nghttp3 until the next
     write, and past 20 bytes for each stream it is told of (100 unless
     told) it fails the connection (ERR_QPACK_FATAL): up to opt.count
     responses may be read between two writes. */
  nghttp3_conn_set_max_concurrent_streams(c.h3, opt.count);

  if ((rv = ngtcp2_conn_open_uni_stream(c.conn, &ctrl, NULL)) != 0 ||
      (rv = ngtcp2_conn_open_uni_stream(c.conn, &qenc, NULL)) != 0 ||
      (rv = ngtcp2_conn_open_uni_stream(c.conn, &qdec, NULL)) != 0) {
    warnx_("ngtcp2_conn_open_uni_stream: %s", ngtcp2_strerror(rv));
    return -1;
  }
  if ((rv = nghttp3_conn_bind_control_stream(c.h3, ctrl)) != 0 ||
      (rv = nghttp3_conn_bind_qpack_streams(c.h3, qenc, qdec)) != 0) {
    warnx_("nghttp3 bind streams: %s", nghttp3_strerror(rv));
    return -1;
  }
  c.qenc = qenc;
  note("control stream %" PRId64 ", QPACK encoder %" PRId64
       ", decoder %" PRId64,
       ctrl, qenc, qdec);
  return 0;
}

/* ------------------------------------------------------------------ */
/* ngtcp2 callbacks                                                    */

/* The --tls-after bytes, as TLS data at opt.tls_level. */
static int send_tls_after(void) {
  int rv = ngtcp2_conn_submit_crypto_data(
    c.conn, opt.tls_level, opt.tls_after.data, opt.tls_after.len);

  if (rv != 0) {
    warnx_("ngtcp2_conn_submit_crypto_data: %s", ngtcp2_strerror(rv));
    return rv;
  }
  c.tls_after_sent = 1;
  note("TLS data queued after the handshake");
  return 0;
}

static int cb_handshake_completed(ngtcp2_conn *conn, void *user_data) {
  c.hs_done = 1;
  note("handshake completed");
  if (opt.tls_after.len > 0 && opt.tls_at_handshake &&
      send_tls_after() != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  if (setup_h3() != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int cb_recv_rx_key(ngtcp2_conn *conn, ngtcp2_encryption_level level,
                          void *user_data) {
  if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT) {
    return 0;
  }
  if (setup_h3() != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int cb_recv_stream_data(ngtcp2_conn *conn, uint32_t flags,
                               int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen,
                               void *user_data, void *stream_user_data) {
  nghttp3_ssize nconsumed;
  req_t *r = req_by_stream(stream_id);

  if (r != NULL && r->raw) {
    r->raw_recv += datalen;
    if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
      r->raw_fin = 1;
    }
    h3_consume(stream_id, datalen);
    return 0;
  }
  if (!c.h3) {
    return 0;
  }
  /* --print-settings: the server's control stream, known by its type */
  if (opt.print_settings && !ngtcp2_is_bidi_stream(stream_id) &&
      offset == 0 && datalen > 0 && data[0] == 0x00) {
    c.peer_ctrl = stream_id;
  }
  if (stream_id == c.peer_ctrl && !c.settings_seen &&
      c.ctrl_head.len < 65536) {
    buf_append(&c.ctrl_head, data, datalen);
    parse_settings();
  }
  /* --qdec-credit: the server's decoder stream, known by its type */
  if (opt.qdec_credit_set && !ngtcp2_is_bidi_stream(stream_id) &&
      offset == 0 && datalen > 0 && data[0] == 0x03) {
    c.peer_qdec = stream_id;
  }
  /* --raw-encoder: the server's decoder stream, past its type, unread */
  if (opt.raw_encoder.len > 0 && !ngtcp2_is_bidi_stream(stream_id) &&
      offset == 0 && datalen > 0 && data[0] == 0x03) {
    c.peer_qdec = stream_id;
    nconsumed = nghttp3_conn_read_stream(c.h3, stream_id, data, 1, 0);
    if (nconsumed < 0) {
      warnx_("nghttp3_conn_read_stream(stream %" PRId64 "): %s", stream_id,
             nghttp3_strerror((int)nconsumed));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    h3_consume(stream_id, datalen);
    return 0;
  }
  if (opt.raw_encoder.len > 0 && stream_id == c.peer_qdec) {
    h3_consume(stream_id, datalen);
    return 0;
  }
  nconsumed = nghttp3_conn_read_stream(c.h3, stream_id, data, datalen,
                                       flags & NGTCP2_STREAM_DATA_FLAG_FIN);
  if (nconsumed < 0) {
    warnx_("nghttp3_conn_read_stream(stream %" PRId64 "): %s", stream_id,
           nghttp3_strerror((int)nconsumed));
    ngtcp2_ccerr_set_application_error(
      &c.last_error, nghttp3_err_infer_quic_app_error_code((int)nconsumed),
      NULL, 0);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  h3_consume(stream_id, (size_t)nconsumed);
  return 0;
}

static int cb_acked_stream_data_offset(ngtcp2_conn *conn, int64_t stream_id,
                                       uint64_t offset, uint64_t datalen,
                                       void *user_data,
                                       void *stream_user_data) {
  int rv;
  if (!c.h3) {
    return 0;
  }
  if (opt.raw_encoder.len > 0 && stream_id == c.qenc) {
    /* nghttp3 hears only of its own bytes, the first ones */
    if (offset >= c.qenc_h3_len) {
      return 0;
    }
    if (offset + datalen > c.qenc_h3_len) {
      datalen = c.qenc_h3_len - offset;
    }
  }
  rv = nghttp3_conn_add_ack_offset(c.h3, stream_id, datalen);
  if (rv != 0) {
    warnx_("nghttp3_conn_add_ack_offset: %s", nghttp3_strerror(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int cb_stream_close(ngtcp2_conn *conn, uint32_t flags,
                           int64_t stream_id, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
  req_t *r = req_by_stream(stream_id);
  int rv;

  if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) {
    app_error_code = NGHTTP3_H3_NO_ERROR;
  }
  note("stream %" PRId64 " closed, app error code 0x%" PRIx64, stream_id,
       app_error_code);
  if (r) {
    r->closed = 1;
    r->close_code = app_error_code;
    r->fin_sent = 1;
  }
  if (!c.h3) {
    return 0;
  }
  rv = nghttp3_conn_close_stream(c.h3, stream_id, app_error_code);
  switch (rv) {
  case 0:
    break;
  case NGHTTP3_ERR_STREAM_NOT_FOUND:
    if (!ngtcp2_is_bidi_stream(stream_id) &&
        !ngtcp2_conn_is_local_stream(conn, stream_id)) {
      ngtcp2_conn_extend_max_streams_uni(conn, 1);
    }
    break;
  default:
    warnx_("nghttp3_conn_close_stream: %s", nghttp3_strerror(rv));
    ngtcp2_ccerr_set_application_error(
      &c.last_error, nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int cb_stream_reset(ngtcp2_conn *conn, int64_t stream_id,
                           uint64_t final_size, uint64_t app_error_code,
                           void *user_data, void *stream_user_data) {
  req_t *r = req_by_stream(stream_id);
  note("stream %" PRId64 ": RESET_STREAM 0x%" PRIx64 " received", stream_id,
       app_error_code);
  if (r && !r->reset_recv) {
    r->reset_recv = 1;
    r->reset_code = app_error_code;
  }
  if (c.h3 && !(r && r->raw)) {
    int rv = nghttp3_conn_shutdown_stream_read(c.h3, stream_id);
    if (rv != 0) {
      warnx_("nghttp3_conn_shutdown_stream_read: %s", nghttp3_strerror(rv));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
  }
  return 0;
}

static int cb_stream_stop_sending(ngtcp2_conn *conn, int64_t stream_id,
                                  uint64_t app_error_code, void *user_data,
                                  void *stream_user_data) {
  req_t *r = req_by_stream(stream_id);
  note("stream %" PRId64 ": STOP_SENDING 0x%" PRIx64 " received", stream_id,
       app_error_code);
  if (r && !r->stop_recv) {
    r->stop_recv = 1;
    r->stop_code = app_error_code;
    r->stop_deadline = timestamp() + STOP_SENDING_GRACE;
    r->fin_sent = 1; /* the write side is gone */
  }
  return 0;
}

static int cb_extend_max_local_streams_bidi(ngtcp2_conn *conn,
                                            uint64_t max_streams,
                                            void *user_data) {
  open_streams();
  return 0;
}

static int cb_extend_max_stream_data(ngtcp2_conn *conn, int64_t stream_id,
                                     uint64_t max_data, void *user_data,
                                     void *stream_user_data) {
  int rv;
  if (!c.h3) {
    return 0;
  }
  rv = nghttp3_conn_unblock_stream(c.h3, stream_id);
  if (rv != 0) {
    warnx_("nghttp3_conn_unblock_stream: %s", nghttp3_strerror(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static void cb_rand(uint8_t *dest, size_t destlen,
                    const ngtcp2_rand_ctx *rand_ctx) {
  random_bytes(dest, destlen);
}

static int cb_get_new_connection_id(ngtcp2_conn *conn, ngtcp2_cid *cid,
                                    uint8_t *token, size_t cidlen,
                                    void *user_data) {
  random_bytes(cid->data, cidlen);
  cid->datalen = cidlen;
  random_bytes(token, NGTCP2_STATELESS_RESET_TOKENLEN);
  return 0;
}

static void log_printf(void *user_data, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

static void log_printf(void *user_data, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *conn_ref) {
  return c.conn;
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */

static int setup_socket(void) {
  struct addrinfo hints, *res, *rp;
  int rv, fd = -1;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;

  rv = getaddrinfo(opt.host, opt.port, &hints, &res);
  if (rv != 0) {
    warnx_("getaddrinfo(%s, %s): %s", opt.host, opt.port, gai_strerror(rv));
    return -1;
  }
  for (rp = res; rp; rp = rp->ai_next) {
    fd = socket(rp->ai_family, rp->ai_socktype | SOCK_CLOEXEC,
                rp->ai_protocol);
    if (fd == -1) {
      continue;
    }
    if (connect(fd, rp->ai_addr, rp->ai_addrlen) == 0) {
      memcpy(&c.remote_addr, rp->ai_addr, rp->ai_addrlen);
      c.remote_addrlen = (socklen_t)rp->ai_addrlen;
      break;
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd == -1) {
    warnx_("cannot create/connect UDP socket to %s:%s: %s", opt.host,
           opt.port, strerror(errno));
    return -1;
  }

  {
    int sz = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  }

  c.local_addrlen = sizeof(c.local_addr);
  if (getsockname(fd, (struct sockaddr *)&c.local_addr, &c.local_addrlen) !=
      0) {
    warnx_("getsockname: %s", strerror(errno));
    close(fd);
    return -1;
  }
  c.fd = fd;
  return 0;
}

/* PATH.tp, next to --session-file PATH. */
static const char *tp_path(void) {
  static char path[4096];

  snprintf(path, sizeof(path), "%s.tp", opt.session_file);
  return path;
}

/* --early: the transport parameters kept with the session, if any. */
static int tp_load(void) {
  ssize_t n;
  int fd = open(tp_path(), O_RDONLY);

  if (fd == -1) {
    return -1;
  }
  n = read(fd, c.tp, sizeof(c.tp));
  close(fd);
  if (n <= 0) {
    return -1;
  }
  c.tplen = (size_t)n;
  return 0;
}

/* --session-file: the session kept there, if any, for this connection. */
static int session_load(void) {
  const unsigned char *p;
  WOLFSSL_SESSION *sess;
  uint8_t buf[16384];
  ssize_t n;
  int fd = open(opt.session_file, O_RDONLY);

  if (fd == -1) {
    return errno == ENOENT ? 0 : (warnx_("%s: %s", opt.session_file,
                                         strerror(errno)), -1);
  }
  n = read(fd, buf, sizeof(buf));
  close(fd);
  p = buf;
  if (n <= 0 || (sess = wolfSSL_d2i_SSL_SESSION(NULL, &p, (long)n)) == NULL) {
    warnx_("%s: not a session", opt.session_file);
    return -1;
  }
  if (wolfSSL_set_session(c.ssl, sess) != WOLFSSL_SUCCESS) {
    warnx_("wolfSSL_set_session failed");
    wolfSSL_SESSION_free(sess);
    return -1;
  }
  if (opt.early && wolfSSL_SESSION_get_max_early_data(sess) > 0 &&
      tp_load() == 0) {
    wolfSSL_set_quic_early_data_enabled(c.ssl, 1);
    c.early = 1;
  }
  wolfSSL_SESSION_free(sess);
  return 0;
}

/* --early: the 0-RTT limits of the session's server, once the connection
   is made; the request streams open at once, their data in 0-RTT. */
static int early_start(void) {
  int rv = ngtcp2_conn_decode_and_set_0rtt_transport_params(c.conn, c.tp,
                                                            c.tplen);

  if (rv != 0) {
    warnx_("ngtcp2_conn_decode_and_set_0rtt_transport_params: %s",
           ngtcp2_strerror(rv));
    return -1;
  }
  if (setup_h3() != 0) {
    return -1;
  }
  note("early data offered");
  open_streams();
  return 0;
}

/* --early is refused: the requests sent in it are gone with it. */
static int cb_tls_early_data_rejected(ngtcp2_conn *conn, void *user_data) {
  warnx_("early data rejected");
  return NGTCP2_ERR_CALLBACK_FAILURE;
}

/* --session-file: the server's transport parameters in PATH.tp. */
static void tp_save(void) {
  uint8_t buf[1024];
  ngtcp2_ssize n =
    ngtcp2_conn_encode_0rtt_transport_params(c.conn, buf, sizeof(buf));
  int fd;

  if (n <= 0) {
    return;
  }
  fd = open(tp_path(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd == -1 || write(fd, buf, (size_t)n) != n) {
    warnx_("%s: %s", tp_path(), strerror(errno));
  }
  if (fd != -1) {
    close(fd);
  }
}

/* --session-file: the connection's session, with the last ticket it got. */
static void session_save(void) {
  WOLFSSL_SESSION *sess = wolfSSL_get1_session(c.ssl);
  unsigned char *der = NULL, *p;
  int len, fd;

  printf("resumed %s\n", wolfSSL_session_reused(c.ssl) ? "yes" : "no");
  if (sess == NULL || (len = wolfSSL_i2d_SSL_SESSION(sess, NULL)) <= 0) {
    warnx_("no session to keep");
    wolfSSL_SESSION_free(sess);
    return;
  }
  der = xrealloc(NULL, (size_t)len);
  p = der;
  (void)wolfSSL_i2d_SSL_SESSION(sess, &p);
  fd = open(opt.session_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd == -1 || write(fd, der, (size_t)len) != len) {
    warnx_("%s: %s", opt.session_file, strerror(errno));
  }
  if (fd != -1) {
    close(fd);
  }
  free(der);
  wolfSSL_SESSION_free(sess);
  tp_save();
}

static int setup_tls(void) {
  unsigned char alpn[256];
  size_t alpnlen = strlen(opt.alpn);

  wolfSSL_Init();

  c.ssl_ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
  if (!c.ssl_ctx) {
    warnx_("wolfSSL_CTX_new failed");
    return -1;
  }
  if (ngtcp2_crypto_wolfssl_configure_client_context(c.ssl_ctx) != 0) {
    warnx_("ngtcp2_crypto_wolfssl_configure_client_context failed");
    return -1;
  }
  /* Tests use self-signed certificates: never verify. */
  wolfSSL_CTX_set_verify(c.ssl_ctx, WOLFSSL_VERIFY_NONE, NULL);

  c.ssl = wolfSSL_new(c.ssl_ctx);
  if (!c.ssl) {
    warnx_("wolfSSL_new failed");
    return -1;
  }
  c.conn_ref.get_conn = get_conn;
  c.conn_ref.user_data = NULL;
  wolfSSL_set_app_data(c.ssl, &c.conn_ref);
  wolfSSL_set_connect_state(c.ssl);
  if (alpnlen > 0) {
    alpn[0] = (unsigned char)alpnlen;
    memcpy(alpn + 1, opt.alpn, alpnlen);
    wolfSSL_set_alpn_protos(c.ssl, alpn, (unsigned int)alpnlen + 1);
  }
  if (opt.sni[0] != '\0' &&
      wolfSSL_UseSNI(c.ssl, WOLFSSL_SNI_HOST_NAME, opt.sni,
                     (unsigned short)strlen(opt.sni)) != WOLFSSL_SUCCESS) {
    warnx_("wolfSSL_UseSNI failed");
    return -1;
  }
  /* QUIC v1 transport parameters codepoint */
  wolfSSL_set_quic_transport_version(c.ssl, 0x39);
  if (opt.no_key_shares && wolfSSL_NoKeyShares(c.ssl) != WOLFSSL_SUCCESS) {
    warnx_("wolfSSL_NoKeyShares failed");
    return -1;
  }
  return opt.session_file != NULL ? session_load() : 0;
}

/* A QUIC variable-length integer at *i of p (len bytes); -1 past the end. */
static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v) {
  size_t n;

  if (*i >= len) {
    return -1;
  }
  n = (size_t)1 << (p[*i] >> 6);
  if (*i + n > len) {
    return -1;
  }
  *v = p[*i] & 0x3f;
  for (size_t k = 1; k < n; ++k) {
    *v = (*v << 8) | p[*i + k];
  }
  *i += n;
  return 0;
}

/*
 * --lose-starts, --lose-resets: whether a 1-RTT packet's frames (RFC 9000
 * 19) hold a STREAM frame with the first bytes of a client-initiated
 * bidirectional stream, or a RESET_STREAM frame. Frames this client does
 * not send end the look (no).
 */
static int holds_what_is_lost(const uint8_t *p, size_t len) {
  size_t i = 0;
  uint64_t v, n, id, off;

  while (i < len) {
    uint8_t type = p[i++];

    if (type == 0x00 || type == 0x01 || type == 0x1e) {
      continue; /* PADDING, PING, HANDSHAKE_DONE */
    }
    if (type == 0x02 || type == 0x03) { /* ACK */
      uint64_t ranges;
      if (read_varint(p, len, &i, &v) || read_varint(p, len, &i, &v) ||
          read_varint(p, len, &i, &ranges) || read_varint(p, len, &i, &v)) {
        return 0;
      }
      for (uint64_t k = 0; k < 2 * ranges + (type == 0x03 ? 3 : 0); ++k) {
        if (read_varint(p, len, &i, &v)) {
          return 0;
        }
      }
    } else if (type >= 0x08 && type <= 0x0f) { /* STREAM */
      off = 0;
      if (read_varint(p, len, &i, &id) ||
          ((type & 0x04) && read_varint(p, len, &i, &off))) {
        return 0;
      }
      if (type & 0x02) {
        if (read_varint(p, len, &i, &n) || n > len - i) {
          return 0;
        }
      } else {
        n = len - i;
      }
      if (id < 16 && off + n > c.stream_end[id / 4]) {
        c.stream_end[id / 4] = off + n; /* --flood goes on after it */
      }
      if (opt.lose_starts && off == 0 && n > 0 && (id & 0x03) == 0) {
        return 1;
      }
      i += n;
    } else if (type == 0x04 && opt.lose_resets) {
      return 1;
    } else if (type == 0x04 || type == 0x11 || type == 0x15) {
      /* RESET_STREAM: 3 integers; MAX_STREAM_DATA, STREAM_DATA_BLOCKED: 2 */
      for (int k = 0; k < (type == 0x04 ? 3 : 2); ++k) {
        if (read_varint(p, len, &i, &v)) {
          return 0;
        }
      }
    } else if (type == 0x05) { /* STOP_SENDING */
      if (read_varint(p, len, &i, &v) || read_varint(p, len, &i, &v)) {
        return 0;
      }
    } else if (type == 0x06) { /* CRYPTO */
      if (read_varint(p, len, &i, &v) || read_varint(p, len, &i, &n) ||
          n > len - i) {
        return 0;
      }
      i += n;
    } else if ((type >= 0x10 && type <= 0x14) || type == 0x16 ||
               type == 0x17 || type == 0x19) {
      /* MAX_DATA, MAX_STREAMS, DATA_BLOCKED, STREAMS_BLOCKED,
         RETIRE_CONNECTION_ID: one integer */
      if (read_varint(p, len, &i, &v)) {
        return 0;
      }
    } else if (type == 0x18) { /* NEW_CONNECTION_ID */
      if (read_varint(p, len, &i, &v) || read_varint(p, len, &i, &v) ||
          i >= len || (size_t)p[i] + 1 + 16 > len - i) {
        return 0;
      }
      i += 1 + (size_t)p[i] + 16;
    } else if (type == 0x1a || type == 0x1b) { /* PATH_CHALLENGE/RESPONSE */
      i += 8;
    } else {
      return 0; /* CONNECTION_CLOSE, or none this client sends */
    }
  }
  return 0;
}

/*
 * --flood: the keys, header and packet number of a 1-RTT packet ngtcp2
 * seals, for packets made here after it. The packet number is taken as
 * the header has it (it has all of it while the numbers are small); the
 * largest server packet number of an ACK frame first in it is kept.
 */
static void flood_keep(const ngtcp2_crypto_aead *aead,
                       const ngtcp2_crypto_aead_ctx *aead_ctx,
                       const uint8_t *plaintext, size_t plaintextlen,
                       const uint8_t *nonce, size_t noncelen,
                       const uint8_t *aad, size_t aadlen) {
  size_t pnlen = (size_t)(aad[0] & 0x03) + 1, i = 1;
  uint64_t pn = 0, largest;

  if (aadlen < pnlen + 1 || aadlen - pnlen > sizeof(c.tx_hdr) ||
      noncelen > sizeof(c.tx_iv) || noncelen < 8) {
    return;
  }
  for (size_t k = aadlen - pnlen; k < aadlen; ++k) {
    pn = (pn << 8) | aad[k];
  }
  memcpy(c.tx_iv, nonce, noncelen);
  for (size_t k = 0; k < 8; ++k) {
    c.tx_iv[noncelen - 1 - k] ^= (uint8_t)(pn >> (8 * k));
  }
  c.tx_ivlen = noncelen;
  c.tx_aead = *aead;
  c.tx_aead_ctx = *aead_ctx;
  memcpy(c.tx_hdr, aad, aadlen - pnlen);
  c.tx_hdrlen = aadlen - pnlen;
  c.tx_pn = pn;
  c.tx_last_1rtt = 1;
  if (plaintextlen > 0 && (plaintext[0] == 0x02 || plaintext[0] == 0x03) &&
      read_varint(plaintext, plaintextlen, &i, &largest) == 0 &&
      largest > c.rx_largest) {
    c.rx_largest = largest;
  }
}

/* Packet protection, looking at 1-RTT plaintext first (--lose-*). */
static int cb_encrypt(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                      const ngtcp2_crypto_aead_ctx *aead_ctx,
                      const uint8_t *plaintext, size_t plaintextlen,
                      const uint8_t *nonce, size_t noncelen,
                      const uint8_t *aad, size_t aadlen) {
  if ((opt.lose_starts || opt.lose_resets) && aadlen > 0 &&
      !(aad[0] & 0x80) && holds_what_is_lost(plaintext, plaintextlen)) {
    c.lose_packet = 1;
  }
  c.tx_last_1rtt = 0;
  if (opt.flood != NULL && aadlen > 0 && !(aad[0] & 0x80)) {
    (void)holds_what_is_lost(plaintext, plaintextlen);
    flood_keep(aead, aead_ctx, plaintext, plaintextlen, nonce, noncelen, aad,
               aadlen);
  }
  return ngtcp2_crypto_encrypt_cb(dest, aead, aead_ctx, plaintext,
                                  plaintextlen, nonce, noncelen, aad, aadlen);
}

/* Header protection; --flood keeps the 1-RTT key's. */
static int cb_hp_mask(uint8_t *dest, const ngtcp2_crypto_cipher *hp,
                      const ngtcp2_crypto_cipher_ctx *hp_ctx,
                      const uint8_t *sample) {
  if (c.tx_last_1rtt) {
    c.tx_last_1rtt = 0;
    c.tx_hp = *hp;
    c.tx_hp_ctx = *hp_ctx;
    c.tx_keys = 1;
  }
  return ngtcp2_crypto_hp_mask_cb(dest, hp, hp_ctx, sample);
}

static int setup_quic(void) {
  ngtcp2_callbacks callbacks = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = cb_handshake_completed,
    .encrypt = cb_encrypt,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = cb_hp_mask,
    .recv_stream_data = cb_recv_stream_data,
    .acked_stream_data_offset = cb_acked_stream_data_offset,
    .stream_close = cb_stream_close,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .extend_max_local_streams_bidi = cb_extend_max_local_streams_bidi,
    .rand = cb_rand,
    .get_new_connection_id = cb_get_new_connection_id,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = cb_stream_reset,
    .extend_max_stream_data = cb_extend_max_stream_data,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = cb_stream_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .recv_rx_key = cb_recv_rx_key,
    .tls_early_data_rejected = cb_tls_early_data_rejected,
  };
  ngtcp2_path path = {
    .local = {.addr = (ngtcp2_sockaddr *)&c.local_addr,
              .addrlen = c.local_addrlen},
    .remote = {.addr = (ngtcp2_sockaddr *)&c.remote_addr,
               .addrlen = c.remote_addrlen},
  };
  ngtcp2_cid dcid, scid;
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  int rv;

  dcid.datalen = 18;
  random_bytes(dcid.data, dcid.datalen);
  scid.datalen = 17;
  random_bytes(scid.data, scid.datalen);

  ngtcp2_settings_default(&settings);
  settings.initial_ts = timestamp();
  if (opt.verbose) {
    settings.log_printf = log_printf;
  }
  settings.max_window = 64 * 1024 * 1024;
  settings.max_stream_window = 16 * 1024 * 1024;

  ngtcp2_transport_params_default(&params);
  params.initial_max_stream_data_bidi_local = 1024 * 1024;
  params.initial_max_stream_data_bidi_remote = 1024 * 1024;
  params.initial_max_stream_data_uni = 1024 * 1024;
  if (opt.uni_credit_set) {
    params.initial_max_stream_data_uni = opt.uni_credit;
  } else if (opt.qdec_credit_set) {
    /* the others' grows as they are read */
    params.initial_max_stream_data_uni = opt.qdec_credit;
  }
  params.initial_max_data = 16 * 1024 * 1024;
  if (opt.no_read) {
    params.initial_max_stream_data_bidi_local = 16 * 1024;
    params.initial_max_data = 64 * 1024;
    settings.max_window = params.initial_max_data;
    settings.max_stream_window = params.initial_max_stream_data_bidi_local;
  }
  params.initial_max_streams_bidi = 0;
  params.initial_max_streams_uni = 100;
  if (opt.max_ack_delay_ms > 0) {
    params.max_ack_delay = opt.max_ack_delay_ms * NGTCP2_MILLISECONDS;
  }
  params.max_idle_timeout =
    (ngtcp2_duration)((opt.timeout + 30) * (double)NGTCP2_SECONDS);

  rv = ngtcp2_conn_client_new(&c.conn, &dcid, &scid, &path,
                              NGTCP2_PROTO_VER_V1, &callbacks, &settings,
                              &params, NULL, NULL);
  if (rv != 0) {
    warnx_("ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
    return -1;
  }
  ngtcp2_conn_set_tls_native_handle(c.conn, c.ssl);
  return 0;
}

/* ------------------------------------------------------------------ */
/* I/O                                                                 */

static void send_packet(const uint8_t *data, size_t len) {
  ssize_t n;
  if (c.lose_packet) {
    c.lose_packet = 0;
    c.lost_starts++;
    note("packet lost on purpose (%" PRIu64 ")", c.lost_starts);
    return;
  }
  do {
    n = send(c.fd, data, len, 0);
  } while (n == -1 && errno == EINTR);
  if (n == -1 && opt.verbose) {
    /* QUIC loss recovery takes care of dropped packets. */
    note("send: %s", strerror(errno));
  }
}

static void local_close(void) {
  if (!c.local_closed && !c.peer_closed) {
    c.local_closed = 1;
    c.local_close_code = c.last_error.error_code;
  }
}

static int write_fins(ngtcp2_tstamp ts);
static int write_raw(ngtcp2_tstamp ts);
static int write_raw_encoder(ngtcp2_tstamp ts);
static int cancel_streams(void);

static int write_streams(void) {
  static uint8_t buf[65536];
  nghttp3_vec vec[16];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_tstamp ts = timestamp();
  size_t max_payload = ngtcp2_conn_get_path_max_tx_udp_payload_size(c.conn);
  size_t quantum = ngtcp2_conn_get_send_quantum(c.conn);
  size_t sent = 0;

  if (max_payload > sizeof(buf)) {
    max_payload = sizeof(buf);
  }
  ngtcp2_path_storage_zero(&ps);

  for (;;) {
    int64_t stream_id = -1;
    int fin = 0;
    int strip_fin = 0;
    nghttp3_ssize sveccnt = 0;
    ngtcp2_ssize ndatalen;
    ngtcp2_ssize nwrite;
    uint32_t flags;
    size_t total = 0;
    req_t *r = NULL;

    if (c.h3 && ngtcp2_conn_get_max_data_left(c.conn)) {
      sveccnt = nghttp3_conn_writev_stream(c.h3, &stream_id, &fin, vec,
                                           sizeof(vec) / sizeof(vec[0]));
      if (sveccnt < 0) {
        warnx_("nghttp3_conn_writev_stream: %s",
               nghttp3_strerror((int)sveccnt));
        ngtcp2_ccerr_set_application_error(
          &c.last_error, nghttp3_err_infer_quic_app_error_code((int)sveccnt),
          NULL, 0);
        return -1;
      }
      for (nghttp3_ssize i = 0; i < sveccnt; ++i) {
        total += vec[i].len;
      }
    }

    if (stream_id >= 0 && fin && opt.fin_separate &&
        (r = req_by_stream(stream_id)) != NULL) {
      /* Hold the FIN back; it goes out later in its own STREAM frame. */
      strip_fin = 1;
      fin = 0;
      if (total == 0) {
        int rv = nghttp3_conn_add_write_offset(c.h3, stream_id, 0);
        if (rv != 0) {
          warnx_("nghttp3_conn_add_write_offset: %s", nghttp3_strerror(rv));
          ngtcp2_ccerr_set_application_error(
            &c.last_error, nghttp3_err_infer_quic_app_error_code(rv), NULL,
            0);
          return -1;
        }
        if (!r->fin_pending) {
          r->fin_pending = 1;
          r->fin_due = ts + FIN_SEPARATE_DELAY;
        }
        continue;
      }
    }

    flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    if (fin) {
      flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }

    nwrite = ngtcp2_conn_writev_stream(c.conn, &ps.path, &pi, buf, max_payload,
                                       &ndatalen, flags, stream_id,
                                       (const ngtcp2_vec *)vec,
                                       (size_t)sveccnt, ts);
    if (nwrite < 0) {
      int rv;
      switch (nwrite) {
      case NGTCP2_ERR_STREAM_DATA_BLOCKED:
        nghttp3_conn_block_stream(c.h3, stream_id);
        continue;
      case NGTCP2_ERR_STREAM_SHUT_WR:
      case NGTCP2_ERR_STREAM_NOT_FOUND:
        nghttp3_conn_shutdown_stream_write(c.h3, stream_id);
        if ((r = req_by_stream(stream_id)) != NULL) {
          r->fin_sent = 1;
        }
        continue;
      case NGTCP2_ERR_WRITE_MORE:
        if (stream_id == c.qenc) {
          c.qenc_h3_len += (uint64_t)ndatalen;
        }
        if (opt.cancel && fin && (size_t)ndatalen == total &&
            (r = req_by_stream(stream_id)) != NULL) {
          r->cancel_due = 1;
        }
        rv = nghttp3_conn_add_write_offset(c.h3, stream_id, (size_t)ndatalen);
        if (rv != 0) {
          warnx_("nghttp3_conn_add_write_offset: %s", nghttp3_strerror(rv));
          ngtcp2_ccerr_set_application_error(
            &c.last_error, nghttp3_err_infer_quic_app_error_code(rv), NULL,
            0);
          return -1;
        }
        if (strip_fin && (size_t)ndatalen == total && !r->fin_pending) {
          r->fin_pending = 1;
          r->fin_due = ts + FIN_SEPARATE_DELAY;
        }
        continue;
      default:
        warnx_("ngtcp2_conn_writev_stream: %s", ngtcp2_strerror((int)nwrite));
        ngtcp2_ccerr_set_liberr(&c.last_error, (int)nwrite, NULL, 0);
        return -1;
      }
    }

    if (ndatalen >= 0 && stream_id >= 0 && stream_id == c.qenc) {
      c.qenc_h3_len += (uint64_t)ndatalen;
    }
    if (ndatalen >= 0 && stream_id >= 0) {
      int rv;
      if (opt.cancel && fin && (size_t)ndatalen == total &&
          (r = req_by_stream(stream_id)) != NULL) {
        r->cancel_due = 1;
      }
      rv = nghttp3_conn_add_write_offset(c.h3, stream_id, (size_t)ndatalen);
      if (rv != 0) {
        warnx_("nghttp3_conn_add_write_offset: %s", nghttp3_strerror(rv));
        ngtcp2_ccerr_set_application_error(
          &c.last_error, nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
        return -1;
      }
      if (strip_fin && (size_t)ndatalen == total && !r->fin_pending) {
        r->fin_pending = 1;
        r->fin_due = ts + FIN_SEPARATE_DELAY;
      }
    }

    if (nwrite == 0) {
      /* congestion limited or nothing to send */
      break;
    }

    send_packet(buf, (size_t)nwrite);
    sent += (size_t)nwrite;
    if (sent >= quantum) {
      break;
    }
  }

  ngtcp2_conn_update_pkt_tx_time(c.conn, ts);

  if (cancel_streams()) {
    return write_streams();
  }
  if (write_raw(ts) != 0 || write_raw_encoder(ts) != 0) {
    return -1;
  }
  return write_fins(ts);
}

/* --cancel: every request that went out is reset at once; 1 if any was. */
static int cancel_streams(void) {
  int any = 0;
  for (size_t i = 0; i < c.next_req; ++i) {
    req_t *r = &c.reqs[i];
    if (!r->cancel_due || r->cancelled) {
      continue;
    }
    r->cancelled = 1;
    any = 1;
    if (opt.cancel == CANCEL_STOP_SENDING) {
      /* only the response is refused: STOP_SENDING, no RESET_STREAM */
      ngtcp2_conn_shutdown_stream_read(c.conn, 0, r->stream_id,
                                       NGHTTP3_H3_REQUEST_CANCELLED);
      if (c.h3) {
        (void)nghttp3_conn_shutdown_stream_read(c.h3, r->stream_id);
      }
      continue;
    }
    if (opt.cancel == CANCEL_RESET_ONLY) {
      ngtcp2_conn_shutdown_stream_write(c.conn, 0, r->stream_id,
                                        NGHTTP3_H3_REQUEST_CANCELLED);
      if (c.h3) {
        nghttp3_conn_shutdown_stream_write(c.h3, r->stream_id);
      }
      continue;
    }
    ngtcp2_conn_shutdown_stream(c.conn, 0, r->stream_id,
                                NGHTTP3_H3_REQUEST_CANCELLED);
    if (c.h3) {
      nghttp3_conn_shutdown_stream_write(c.h3, r->stream_id);
      (void)nghttp3_conn_shutdown_stream_read(c.h3, r->stream_id);
    }
  }
  return any;
}

/* What write_stream_packet did. */
enum stream_write {
  SW_SENT,      /* a packet went out */
  SW_CONGESTED, /* nothing may go now, on any stream */
  SW_BLOCKED,   /* this stream is out of flow-control credit */
  SW_GONE,      /* this stream takes nothing more */
  SW_FATAL,     /* the connection is over (logged, c.last_error set) */
};

/*
 * One packet with (the start of) data on stream_id, outside nghttp3; FIN in
 * flags applies once all of data fits. *ndatalen: the stream bytes the
 * packet took, -1 when none (not even the FIN).
 */
static enum stream_write write_stream_packet(int64_t stream_id,
                                             const uint8_t *data, size_t len,
                                             uint32_t flags, ngtcp2_tstamp ts,
                                             ngtcp2_ssize *ndatalen) {
  static uint8_t buf[65536];
  size_t max_payload = ngtcp2_conn_get_path_max_tx_udp_payload_size(c.conn);
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_vec v = {(uint8_t *)(uintptr_t)data, len};
  ngtcp2_ssize nwrite;

  if (max_payload > sizeof(buf)) {
    max_payload = sizeof(buf);
  }
  *ndatalen = -1;
  ngtcp2_path_storage_zero(&ps);
  nwrite = ngtcp2_conn_writev_stream(c.conn, &ps.path, &pi, buf, max_payload,
                                     ndatalen, flags, stream_id,
                                     len > 0 ? &v : NULL, len > 0 ? 1 : 0, ts);
  switch (nwrite) {
  case 0:
    return SW_CONGESTED;
  case NGTCP2_ERR_STREAM_DATA_BLOCKED:
    return SW_BLOCKED;
  case NGTCP2_ERR_STREAM_SHUT_WR:
  case NGTCP2_ERR_STREAM_NOT_FOUND:
    return SW_GONE;
  default:
    break;
  }
  if (nwrite < 0) {
    warnx_("ngtcp2_conn_writev_stream(stream %" PRId64 "): %s", stream_id,
           ngtcp2_strerror((int)nwrite));
    ngtcp2_ccerr_set_liberr(&c.last_error, (int)nwrite, NULL, 0);
    return SW_FATAL;
  }
  send_packet(buf, (size_t)nwrite);
  return SW_SENT;
}

/* Sends the held-back FINs of --fin-separate streams as empty STREAM
   frames, each after the data of its stream went out in earlier packets. */
static int write_fins(ngtcp2_tstamp ts) {
  if (!opt.fin_separate || opt.no_fin) {
    return 0;
  }
  for (size_t i = 0; i < c.next_req; ++i) {
    req_t *r = &c.reqs[i];

    while (r->fin_pending && !r->fin_sent && ts >= r->fin_due) {
      ngtcp2_ssize ndatalen;
      enum stream_write w = write_stream_packet(
        r->stream_id, NULL, 0, NGTCP2_WRITE_STREAM_FLAG_FIN, ts, &ndatalen);

      if (ndatalen >= 0) {
        r->fin_sent = 1;
        note("stream %" PRId64 ": separate FIN sent", r->stream_id);
      }
      if (w == SW_GONE) {
        r->fin_sent = 1;
      } else if (w == SW_FATAL) {
        return -1;
      } else if (w != SW_SENT) {
        return 0; /* retry on the next round */
      }
    }
  }
  return 0;
}

/* --raw: each request stream's bytes, as given, then FIN (not with
   --no-fin, where fin_sent only marks the end of the bytes). */
static int write_raw(ngtcp2_tstamp ts) {
  for (size_t i = 0; i < c.next_req; ++i) {
    req_t *r = &c.reqs[i];

    while (r->raw && !r->fin_sent) {
      ngtcp2_ssize ndatalen;
      enum stream_write w = write_stream_packet(
        r->stream_id, opt.raw.len > 0 ? opt.raw.data + r->raw_off : NULL,
        opt.raw.len - r->raw_off,
        opt.no_fin ? NGTCP2_WRITE_STREAM_FLAG_NONE :
                     NGTCP2_WRITE_STREAM_FLAG_FIN,
        ts, &ndatalen);

      if (ndatalen >= 0) {
        r->raw_off += (size_t)ndatalen;
        if (r->raw_off == opt.raw.len) {
          r->fin_sent = 1;
          r->cancel_due = opt.cancel;
          note("stream %" PRId64 ": raw bytes sent", r->stream_id);
        }
      }
      if (w == SW_GONE) {
        r->fin_sent = 1;
      } else if (w == SW_FATAL) {
        return -1;
      } else if (w == SW_BLOCKED) {
        break; /* the next stream may have credit */
      } else if (w == SW_CONGESTED) {
        return 0; /* retry on the next round */
      }
    }
  }
  return 0;
}

/* --raw-encoder: the bytes on the QPACK encoder stream, after nghttp3's. */
static int write_raw_encoder(ngtcp2_tstamp ts) {
  /* the stream type goes first, from nghttp3 */
  while (c.qenc >= 0 && c.qenc_h3_len > 0 &&
         c.qenc_raw_off < opt.raw_encoder.len) {
    ngtcp2_ssize ndatalen;
    enum stream_write w = write_stream_packet(
      c.qenc, opt.raw_encoder.data + c.qenc_raw_off,
      opt.raw_encoder.len - c.qenc_raw_off, NGTCP2_WRITE_STREAM_FLAG_NONE, ts,
      &ndatalen);

    if (ndatalen > 0) {
      c.qenc_raw_off += (size_t)ndatalen;
    }
    if (w == SW_GONE) {
      warnx_("the QPACK encoder stream was closed");
      return -1;
    }
    if (w == SW_FATAL) {
      return -1;
    }
    if (w != SW_SENT) {
      return 0;
    }
  }
  return 0;
}

static int read_datagram(const uint8_t *buf, size_t n);

/* Returns 0 to go on, -1 when the connection is over. */
static int read_packets(void) {
  static uint8_t buf[65536];

  for (int i = 0; i < 64; ++i) {
    ssize_t n = recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return 0;
      }
      /* ICMP port unreachable etc.: let the timers deal with it */
      note("recv: %s", strerror(errno));
      return 0;
    }
    if (c.hold_state == 1) {
      /* --hold: kept unread */
      c.held = xrealloc(c.held, (c.nheld + 1) * sizeof(*c.held));
      memset(&c.held[c.nheld], 0, sizeof(c.held[0]));
      buf_append(&c.held[c.nheld++], buf, (size_t)n);
      continue;
    }
    if (read_datagram(buf, (size_t)n) != 0) {
      return -1;
    }
  }
  return 0;
}

/* --hold is over: the datagrams kept are read, but the one dropped. */
static int read_held(void) {
  int rv = 0;

  c.hold_state = 2;
  note("hold over: %zu datagrams kept", c.nheld);
  for (size_t i = 0; i < c.nheld; ++i) {
    if (opt.hold_drop > 0 && i + opt.hold_drop == c.nheld) {
      note("hold: datagram %zu dropped", i);
    } else if (rv == 0) {
      rv = read_datagram(c.held[i].data, c.held[i].len);
    }
    free(c.held[i].data);
  }
  free(c.held);
  c.held = NULL;
  c.nheld = 0;
  return rv;
}

/* One datagram to ngtcp2: 0 to go on, -1 when the connection is over. */
static int read_datagram(const uint8_t *buf, size_t n) {
  ngtcp2_path path = {
    .local = {.addr = (ngtcp2_sockaddr *)&c.local_addr,
              .addrlen = c.local_addrlen},
    .remote = {.addr = (ngtcp2_sockaddr *)&c.remote_addr,
               .addrlen = c.remote_addrlen},
  };

  {
    ngtcp2_pkt_info pi = {0};
    int rv;

    rv = ngtcp2_conn_read_pkt(c.conn, &path, &pi, buf, n, timestamp());
    if (rv == 0) {
      return 0;
    }

    switch (rv) {
    case NGTCP2_ERR_DRAINING: {
      const ngtcp2_ccerr *ce = ngtcp2_conn_get_ccerr(c.conn);
      c.peer_closed = 1;
      c.peer_close_code = ce->error_code;
      c.conn_dead = 1;
      warnx_("connection closed by peer: %s error 0x%" PRIx64 " reason '%.*s'",
             ce->type == NGTCP2_CCERR_TYPE_APPLICATION ? "application"
                                                       : "transport",
             ce->error_code, (int)ce->reasonlen,
             ce->reason ? (const char *)ce->reason : "");
      return -1;
    }
    case NGTCP2_ERR_DROP_CONN:
      c.conn_dead = 1;
      c.local_closed = 1;
      c.local_close_code = 0;
      warnx_("ngtcp2_conn_read_pkt: %s", ngtcp2_strerror(rv));
      return -1;
    case NGTCP2_ERR_CRYPTO:
      warnx_("ngtcp2_conn_read_pkt: %s (TLS alert %u)", ngtcp2_strerror(rv),
             ngtcp2_conn_get_tls_alert(c.conn));
      if (!c.last_error.error_code) {
        ngtcp2_ccerr_set_tls_alert(&c.last_error,
                                   ngtcp2_conn_get_tls_alert(c.conn), NULL, 0);
      }
      local_close();
      return -1;
    case NGTCP2_ERR_CALLBACK_FAILURE:
      warnx_("ngtcp2_conn_read_pkt: %s", ngtcp2_strerror(rv));
      if (!c.last_error.error_code) {
        ngtcp2_ccerr_set_liberr(&c.last_error, rv, NULL, 0);
      }
      local_close();
      return -1;
    default:
      warnx_("ngtcp2_conn_read_pkt: %s", ngtcp2_strerror(rv));
      ngtcp2_ccerr_set_liberr(&c.last_error, rv, NULL, 0);
      local_close();
      return -1;
    }
  }
  return 0;
}

static void send_connection_close(void) {
  uint8_t buf[NGTCP2_MAX_UDP_PAYLOAD_SIZE];
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n;

  if (!c.conn || c.conn_dead || ngtcp2_conn_in_closing_period(c.conn) ||
      ngtcp2_conn_in_draining_period(c.conn)) {
    return;
  }
  ngtcp2_path_storage_zero(&ps);
  n = ngtcp2_conn_write_connection_close(c.conn, &ps.path, &pi, buf,
                                         sizeof(buf), &c.last_error,
                                         timestamp());
  if (n > 0) {
    send_packet(buf, (size_t)n);
  } else if (n < 0) {
    note("ngtcp2_conn_write_connection_close: %s", ngtcp2_strerror((int)n));
  }
  c.conn_dead = 1;
}

/* ------------------------------------------------------------------ */
/* --flood                                                             */

#define FLOOD_PKTLEN 1200

static size_t put_varint(uint8_t *p, uint64_t v) {
  if (v < 64) {
    p[0] = (uint8_t)v;
    return 1;
  }
  if (v < 16384) {
    p[0] = (uint8_t)(0x40 | (v >> 8));
    p[1] = (uint8_t)v;
    return 2;
  }
  if (v < (1ULL << 30)) {
    for (int k = 0; k < 4; ++k) {
      p[k] = (uint8_t)(v >> (8 * (3 - k)));
    }
    p[0] |= 0x80;
    return 4;
  }
  for (int k = 0; k < 8; ++k) {
    p[k] = (uint8_t)(v >> (8 * (7 - k)));
  }
  p[0] |= 0xc0;
  return 8;
}

/* The frames of the n-th --flood packet, at most room bytes; 0 for an
   unknown KIND. */
static size_t flood_frames(uint8_t *p, size_t room, uint64_t n) {
  static uint64_t seq = 1000, retire;
  const char *k = opt.flood;
  size_t len = 0;

  if (strcmp(k, "close") == 0) {
    p[len++] = 0x1d;
    len += put_varint(p + len, NGHTTP3_H3_NO_ERROR);
    p[len++] = 0;
  } else if (strcmp(k, "ping") == 0) {
    p[len++] = 0x01;
  } else if (strcmp(k, "padding") == 0) {
    memset(p, 0, room);
    len = room;
  } else if (strcmp(k, "pings") == 0) {
    memset(p, 0x01, room);
    len = room;
  } else if (strcmp(k, "path-challenge") == 0) {
    while (len + 9 <= room) {
      p[len++] = 0x1a;
      random_bytes(p + len, 8);
      len += 8;
    }
  } else if (strcmp(k, "new-cid") == 0) {
    while (len + 1 + 8 + 8 + 1 + 8 + 16 <= room) {
      p[len++] = 0x18;
      len += put_varint(p + len, seq);
      len += put_varint(p + len, seq); /* retire_prior_to: all before */
      ++seq;
      p[len++] = 8;
      random_bytes(p + len, 8 + 16);
      len += 8 + 16;
    }
  } else if (strcmp(k, "retire-cid") == 0) {
    p[len++] = 0x19;
    len += put_varint(p + len, retire++);
  } else if (strcmp(k, "max-streams") == 0) {
    for (int bidi = 0; len + 1 + 8 <= room; bidi = !bidi) {
      uint64_t v = 100 + n * 1000 + len;

      p[len++] = (uint8_t)(bidi ? 0x12 : 0x13);
      len += put_varint(p + len, v);
    }
  } else if (strcmp(k, "streams-blocked") == 0) {
    for (int bidi = 0; len + 2 <= room; bidi = !bidi) {
      p[len++] = (uint8_t)(bidi ? 0x16 : 0x17);
      len += put_varint(p + len, 0);
    }
  } else if (strcmp(k, "max-data") == 0) {
    while (len + 1 + 8 <= room) {
      uint64_t v = (1ULL << 26) + n * 1000 + len;

      p[len++] = 0x10;
      len += put_varint(p + len, v);
    }
  } else if (strcmp(k, "data-blocked") == 0) {
    while (len + 2 <= room) {
      p[len++] = 0x14;
      len += put_varint(p + len, 0);
    }
  } else if (strcmp(k, "ctrl-unknown") == 0 || strcmp(k, "ctrl-huge") == 0 ||
             strcmp(k, "ctrl-priority") == 0 || strcmp(k, "bytewise") == 0) {
    /* one STREAM frame on the control stream (2) after what nghttp3
       wrote, or 1-byte ones of --raw on stream 4 */
    static uint64_t off[3];
    static int began;
    uint8_t *d;
    int which = k[0] == 'c' ? 0 : 2;
    int64_t id = which == 0 ? 2 : 4;
    size_t dlen = (room - 1 - 8 - 8 - 2) & ~(size_t)1;

    if (!began) {
      began = 1;
      off[0] = c.stream_end[0];
    }
    if (which == 2) {
      while (off[2] < opt.raw.len && len + 1 + 1 + 8 + 1 + 1 <= room) {
        int fin = off[2] + 1 == opt.raw.len;

        p[len++] = (uint8_t)(0x0e | fin);
        len += put_varint(p + len, (uint64_t)id);
        len += put_varint(p + len, off[2]);
        p[len++] = 1;
        p[len++] = opt.raw.data[off[2]++];
      }
      if (len == 0) {
        p[len++] = 0x01;
      }
      return len;
    }
    p[len++] = 0x0e; /* offset and length */
    len += put_varint(p + len, (uint64_t)id);
    p[len] = 0xc0; /* 8-byte integers: the frame's size is known */
    for (int b = 1; b < 8; ++b) {
      p[len + (size_t)b] = (uint8_t)(off[which] >> (8 * (7 - b)));
    }
    len += 8;
    len += put_varint(p + len, dlen); /* 2 bytes */
    d = p + len;
    if (strcmp(k, "ctrl-unknown") == 0) {
      for (size_t b = 0; b + 2 <= dlen; b += 2) {
        d[b] = 0x21; /* a reserved frame type, empty */
        d[b + 1] = 0;
      }
    } else if (strcmp(k, "ctrl-huge") == 0) {
      memset(d, 0, dlen);
      if (off[0] == c.stream_end[0]) {
        d[0] = 0x21;
        d[1] = 0xff; /* length 2^62 - 1 */
        memset(d + 2, 0xff, 7);
      }
    } else if (strcmp(k, "ctrl-priority") == 0) {
      /* PRIORITY_UPDATE (request stream), 10 bytes: 80 0f 07 00, length
         5, the stream (of 0 to 60), "u=1"; unknown frames to the end */
      size_t b = 0;
      static uint64_t e;

      for (; b + 10 <= dlen; b += 10, ++e) {
        memcpy(d + b, "\x80\x0f\x07\x00\x05\x40", 6);
        d[b + 6] = (uint8_t)((e % 16) * 4);
        memcpy(d + b + 7, "u=1", 3);
      }
      for (; b + 2 <= dlen; b += 2) {
        d[b] = 0x21;
        d[b + 1] = 0;
      }
      if (b < dlen) {
        d[b - 1] = 1; /* the last unknown frame takes the odd byte */
        d[b] = 0;
      }
    }
    len += dlen;
    off[which] += dlen;
  } else if (strcmp(k, "ack") == 0) {
    /* one ACK frame: the largest, then every other packet below it */
    uint64_t largest = c.rx_largest, ranges = largest / 2;

    if (ranges > (room - 24) / 2) {
      ranges = (room - 24) / 2;
    }
    p[len++] = 0x02;
    len += put_varint(p + len, largest);
    len += put_varint(p + len, 0);
    len += put_varint(p + len, ranges);
    len += put_varint(p + len, 0);
    for (uint64_t r = 0; r < ranges; ++r) {
      p[len++] = 0; /* gap: one packet not acknowledged */
      p[len++] = 0; /* range: one packet */
    }
  }
  return len;
}

/* The n-th --flood packet, sealed with the keys ngtcp2 used last. */
static size_t flood_packet(uint8_t *out, uint64_t n) {
  uint8_t plain[FLOOD_PKTLEN], nonce[32], mask[16];
  size_t hlen = c.tx_hdrlen + 4, plen;
  uint64_t pn = c.tx_pn + 100 + n;

  memcpy(out, c.tx_hdr, c.tx_hdrlen);
  out[0] = (uint8_t)((out[0] & ~0x03) | 0x03); /* 4-byte packet number */
  for (int k = 0; k < 4; ++k) {
    out[c.tx_hdrlen + (size_t)k] = (uint8_t)(pn >> (8 * (3 - k)));
  }
  plen = flood_frames(plain, FLOOD_PKTLEN - hlen - 16, n);
  if (plen == 0) {
    return 0;
  }
  memcpy(nonce, c.tx_iv, c.tx_ivlen);
  for (size_t k = 0; k < 8; ++k) {
    nonce[c.tx_ivlen - 1 - k] ^= (uint8_t)(pn >> (8 * k));
  }
  if (ngtcp2_crypto_encrypt(out + hlen, &c.tx_aead, &c.tx_aead_ctx, plain,
                            plen, nonce, c.tx_ivlen, out, hlen) != 0 ||
      ngtcp2_crypto_hp_mask(mask, &c.tx_hp, &c.tx_hp_ctx, out + hlen) != 0) {
    return 0;
  }
  out[0] ^= mask[0] & 0x1f;
  for (size_t k = 0; k < 4; ++k) {
    out[c.tx_hdrlen + k] ^= mask[1 + k];
  }
  return hlen + plen + 16;
}

static int print_results(void);

/* --flood: the packets, paced; what comes is read and dropped. */
static int flood_run(void) {
  static uint8_t buf[65536];
  uint64_t sent = 0, got = 0;
  ngtcp2_tstamp start = timestamp();
  size_t n;

  if (!c.tx_keys) {
    warnx_("--flood: no 1-RTT packet was sent");
    return -1;
  }
  while (sent < opt.flood_packets && !terminated) {
    ngtcp2_tstamp due =
      start + sent * NGTCP2_SECONDS / (opt.flood_rate ? opt.flood_rate : 1);
    ngtcp2_tstamp now = timestamp();

    while (recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
      ++got;
    }
    if (due > now) {
      struct timespec ts = {0, (long)(due - now)};
      nanosleep(&ts, NULL);
    }
    if ((n = flood_packet(buf, sent)) == 0) {
      warnx_("--flood: cannot make a %s packet", opt.flood);
      return -1;
    }
    send_packet(buf, n);
    ++sent;
  }
  while (recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    ++got;
  }
  /* the end: CONNECTION_CLOSE, H3_NO_ERROR */
  opt.flood = "close";
  if ((n = flood_packet(buf, sent)) > 0) {
    send_packet(buf, n);
  }
  printf("flood sent %" PRIu64 " got %" PRIu64 "\n", sent, got);
  return 0;
}

static ngtcp2_tstamp next_wakeup(ngtcp2_tstamp now, ngtcp2_tstamp deadline) {
  ngtcp2_tstamp t = deadline;
  ngtcp2_tstamp e = ngtcp2_conn_get_expiry(c.conn);
  if (e < t) {
    t = e;
  }
  for (size_t i = 0; i < c.next_req; ++i) {
    req_t *r = &c.reqs[i];
    if (r->done) {
      continue;
    }
    /* A FIN already due but still unsent is congestion limited: incoming
       ACKs or ngtcp2's own timers wake us up for it. */
    if (r->fin_pending && !r->fin_sent && r->fin_due > now && r->fin_due < t) {
      t = r->fin_due;
    }
    if (r->stop_recv && r->stop_deadline < t) {
      t = r->stop_deadline;
    }
  }
  return t;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

static int print_results(void) {
  int all = 1;

  for (size_t i = 0; i < opt.count; ++i) {
    req_t *r = &c.reqs[i];

    if (r->resp_complete && r->have_final) {
      printf("status %d body %" PRIu64 "\n", r->status, r->body_len);
    } else if (r->raw_fin) {
      printf("raw %" PRIu64 "\n", r->raw_recv);
    } else if (r->cancelled) {
      printf("cancelled\n");
    } else if (r->reset_recv) {
      printf("reset 0x%" PRIx64 "\n", r->reset_code);
    } else if (r->stop_recv) {
      printf("reset 0x%" PRIx64 "\n", r->stop_code);
    } else if (r->local_err) {
      printf("local-reset 0x%" PRIx64 "\n", r->local_code);
    } else if (r->goaway) {
      printf("goaway\n");

    } else if (c.peer_closed) {
      printf("closed 0x%" PRIx64 "\n", c.peer_close_code);
    } else if (c.local_closed) {
      printf("local-close 0x%" PRIx64 "\n", c.local_close_code);
    } else if (r->closed) {
      /* closed without any of the above: should not happen */
      printf("local-reset 0x%" PRIx64 "\n", r->close_code);
    } else if (r->submit_failed) {
      printf("local-reset 0x%x\n", NGHTTP3_H3_REQUEST_CANCELLED);
    } else {
      printf("timeout\n");
      all = 0;
    }

    if (opt.print_headers && r->hdrs.len) {
      fwrite(r->hdrs.data, 1, r->hdrs.len, stdout);
    }
    if (opt.print_body && r->body.len) {
      fwrite(r->body.data, 1, r->body.len, stdout);
      if (r->body.data[r->body.len - 1] != '\n') {
        fputc('\n', stdout);
      }
    }
  }
  if (opt.print_settings) {
    if (c.settings_seen) {
      printf("settings connect-protocol %d\n", c.connect_protocol);
    } else {
      printf("settings none\n");
    }
  }
  if (opt.print_credit && c.conn != NULL) {
    printf("credit left %" PRIu64 "\n", ngtcp2_conn_get_max_data_left(c.conn));
  }
  if (opt.tls_after.len > 0) {
    if (c.peer_closed) {
      printf("tls-after closed 0x%" PRIx64 "\n", c.peer_close_code);
    } else {
      printf("tls-after open\n");
    }
  }
  fflush(stdout);
  return all;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv) {
  ngtcp2_tstamp deadline;
  int timed_out = 0;
  sigset_t term, unblocked;
  struct sigaction sa;

  signal(SIGPIPE, SIG_IGN);
  /* SIGTERM only while ppoll waits: then the loop sees it at once */
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, &unblocked);
  sigdelset(&unblocked, SIGTERM);
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_sigterm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  parse_args(argc, argv);
  memset(abody, 'a', sizeof(abody));

  c.fd = -1;
  ngtcp2_ccerr_default(&c.last_error);
  c.reqs = xrealloc(NULL, opt.count * sizeof(*c.reqs));
  memset(c.reqs, 0, opt.count * sizeof(*c.reqs));
  for (size_t i = 0; i < opt.count; ++i) {
    c.reqs[i].idx = i;
    c.reqs[i].stream_id = -1;
  }
  c.nva = make_nva(&opt.fields);
  c.nvlen = opt.fields.len;
  c.tnva = make_nva(&opt.trailers);
  c.tnvlen = opt.trailers.len;

  if (setup_socket() != 0 || setup_tls() != 0 || setup_quic() != 0 ||
      (c.early && early_start() != 0)) {
    return EXIT_USAGE;
  }

  deadline = timestamp() + (ngtcp2_tstamp)(opt.timeout * NGTCP2_SECONDS);

  if (write_streams() != 0) {
    local_close();
    send_connection_close();
  }
  if (opt.tls_after_hello.len > 0 && !c.local_closed) {
    /* the ClientHello went in the first write; these go in the next */
    int rv = ngtcp2_conn_submit_crypto_data(c.conn,
      NGTCP2_ENCRYPTION_LEVEL_INITIAL, opt.tls_after_hello.data,
      opt.tls_after_hello.len);

    if (rv != 0) {
      warnx_("ngtcp2_conn_submit_crypto_data: %s", ngtcp2_strerror(rv));
      return EXIT_USAGE;
    }
    if (write_streams() != 0) {
      local_close();
      send_connection_close();
    }
  }

  while (!c.conn_dead && !c.local_closed) {
    ngtcp2_tstamp now, wake;
    struct timespec tmo;
    struct pollfd pfd;
    int rv;

    open_streams();
    now = timestamp();
    if (c.deaf_from != 0 && now >= c.deaf_from && c.resume_at > now &&
        c.next_req == opt.pause_after) {
      /* --deaf-pause: no reading, no timers, until it is over (once:
         the sleep takes all of it) */
      fputs("h3raw: paused\n", stderr);
      fflush(stderr);
      tmo.tv_sec = (time_t)((c.resume_at - now) / NGTCP2_SECONDS);
      tmo.tv_nsec = (long)((c.resume_at - now) % NGTCP2_SECONDS);
      while (nanosleep(&tmo, &tmo) != 0 && errno == EINTR) {
      }
      open_streams();
      if (write_streams() != 0) {
        local_close();
        break;
      }
      continue;
    }
    if (c.hs_done && all_done() && opt.flood != NULL) {
      print_results();
      fflush(stdout);
      return flood_run() == 0 ? 0 : EXIT_USAGE;
    }
    if (c.hs_done && all_done()) {
      if (opt.tls_after.len == 0) {
        if (opt.linger <= 0) {
          break;
        }
        if (c.linger_until == 0) {
          c.linger_until =
            timestamp() + (ngtcp2_tstamp)(opt.linger * NGTCP2_SECONDS);
          note("every request has an outcome; lingering");
        } else if (timestamp() >= c.linger_until) {
          break;
        }
      }
      if (!c.tls_after_sent) {
        rv = send_tls_after();
        if (rv != 0) {
          ngtcp2_ccerr_set_liberr(&c.last_error, rv, NULL, 0);
          local_close();
          break;
        }
        if (write_streams() != 0) {
          local_close();
          break;
        }
      }
    }

    if (opt.hold > 0 && c.hold_state == 0 && c.hs_done &&
        c.next_req == opt.count) {
      c.hold_state = 1;
      c.hold_until = timestamp() + (ngtcp2_tstamp)(opt.hold * NGTCP2_SECONDS);
      note("holding datagrams");
    }
    if (c.hold_state == 1 && timestamp() >= c.hold_until) {
      if (read_held() != 0) {
        break;
      }
      if (write_streams() != 0) {
        local_close();
        break;
      }
    }

    now = timestamp();
    if (now >= deadline || terminated) {
      timed_out = 1;
      break;
    }
    if (opt.drip > 0 && now >= c.drip_next) {
      /* --drip: stream credit alone, every half second */
      c.drip_next = now + NGTCP2_SECONDS / 2;
      for (size_t i = 0; i < c.next_req; ++i) {
        if (!c.reqs[i].done && c.reqs[i].stream_id >= 0) {
          ngtcp2_conn_extend_max_stream_offset(c.conn, c.reqs[i].stream_id,
                                               opt.drip);
        }
      }
      (void)write_streams();
    }

    wake = next_wakeup(now, deadline);
    if (c.linger_until != 0 && wake > c.linger_until) {
      wake = c.linger_until;
    }
    if (opt.drip > 0 && wake > c.drip_next) {
      wake = c.drip_next;
    }
    if (c.resume_at != 0 && c.next_req == opt.pause_after &&
        wake > c.resume_at) {
      wake = c.resume_at;
    }
    if (c.deaf_from > now && wake > c.deaf_from) {
      wake = c.deaf_from;
    }
    if (c.hold_state == 1 && wake > c.hold_until) {
      wake = c.hold_until;
    }
    if (wake < now) {
      wake = now;
    }
    tmo.tv_sec = (time_t)((wake - now) / NGTCP2_SECONDS);
    tmo.tv_nsec = (long)((wake - now) % NGTCP2_SECONDS);

    pfd.fd = c.fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    rv = ppoll(&pfd, 1, &tmo, &unblocked);
    if (rv < 0 && errno != EINTR) {
      warnx_("ppoll: %s", strerror(errno));
      ngtcp2_ccerr_set_liberr(&c.last_error, NGTCP2_ERR_INTERNAL, NULL, 0);
      local_close();
      break;
    }

    if (rv > 0 && (pfd.revents & (POLLIN | POLLERR))) {
      if (read_packets() != 0) {
        break;
      }
    }

    now = timestamp();
    if (ngtcp2_conn_get_expiry(c.conn) <= now) {
      rv = ngtcp2_conn_handle_expiry(c.conn, now);
      if (rv != 0) {
        if (rv == NGTCP2_ERR_IDLE_CLOSE) {
          warnx_("idle timeout");
          c.idle_closed = 1;
          c.conn_dead = 1;
          break;
        }
        warnx_("ngtcp2_conn_handle_expiry: %s", ngtcp2_strerror(rv));
        ngtcp2_ccerr_set_liberr(&c.last_error, rv, NULL, 0);
        local_close();
        break;
      }
    }

    open_streams(); /* those a --pause held back, when it is over */
    if (write_streams() != 0) {
      local_close();
      break;
    }
  }

  if (!c.hs_done) {
    if (c.peer_closed) {
      warnx_("handshake failed: connection closed by peer (0x%" PRIx64 ")",
             c.peer_close_code);
    } else if (c.local_closed) {
      warnx_("handshake failed");
    } else {
      warnx_("handshake timed out");
    }
    send_connection_close();
    return EXIT_TIMEOUT;
  }

  all_done();
  if (!c.local_closed && !c.peer_closed) {
    /* graceful close: H3_NO_ERROR */
    ngtcp2_ccerr_set_application_error(&c.last_error, NGHTTP3_H3_NO_ERROR,
                                       NULL, 0);
  }
  send_connection_close();

  if (opt.session_file != NULL) {
    session_save();
  }
  if (timed_out) {
    warnx_("timeout");
  }
  if (!print_results()) {
    return EXIT_TIMEOUT;
  }
  return 0;
}
