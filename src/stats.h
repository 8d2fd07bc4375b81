/* stats.h: the daemon's counters, one struct, read by the control socket. */
#ifndef QPROXY_STATS_H
#define QPROXY_STATS_H

#include <stdint.h>

#include "hist.h"

struct stats {
	uint64_t	conns_current, conns_total;
	uint64_t	conns_closing;		/* now: of current, closing */
	uint64_t	handshakes_completed, handshakes_failed;
	uint64_t	handshakes_current;	/* in progress */
	uint64_t	clients_current;	/* addresses with a connection */
	uint64_t	cids_current;		/* in the CID table */
	/* limits that held: what each turned away or closed */
	uint64_t	refused_max_connections;
	uint64_t	refused_max_handshakes;
	uint64_t	refused_per_client;	/* max_connections_per_client */
	uint64_t	goaway_max_requests;
	uint64_t	closed_stream_resets;	/* over max_stream_resets */
	uint64_t	closed_send_timeout;
	uint64_t	headers_too_large;	/* over max_header_size: 431 */
	uint64_t	fields_over_client_limit;	/* the client's
					   SETTINGS_MAX_FIELD_SECTION_SIZE */
	uint64_t	closed_protocol_errors;	/* HTTP/3 or QPACK broken */
	uint64_t	response_memory_waits;	/* a backend read waited for it */
	uint64_t	streams_reset_memory;	/* reset to free response memory */
	uint64_t	streams_reset_req_memory;	/* 503 or reset: request memory */
	uint64_t	closed_quic_memory;	/* quic_buffer_total */
	uint64_t	closed_field_floods;	/* 2 x max_header_size */
	uint64_t	closed_qpack_decoder_held;	/* its credit withheld */
	uint64_t	goaway_old_configurations;	/* SERVER_CONFIGS_MAX */
	uint64_t	streams_current, streams_total;
	uint64_t	requests_total;
	uint64_t	responses[6];		/* by status class, 1xx..5xx */
	uint64_t	requests_malformed;	/* reset with H3_MESSAGE_ERROR */
	uint64_t	requests_misdirected;	/* 421: another certificate's */
	uint64_t	requests_rate_limited;	/* 429: its client's rate */
	uint64_t	requests_forbidden;	/* 403: a route's allow, deny */
	uint64_t	requests_answered;	/* a route's return, redirect */
	uint64_t	auth_passed;		/* auth_basic_file: let in */
	uint64_t	auth_failed;		/* 401 */
	uint64_t	auth_checks;		/* hashes checked (not cached) */
	uint64_t	auth_throttled;		/* 503: no check in the budget */
	uint64_t	auth_client_throttled;	/* 429: none in the client's */
	uint64_t	requests_body_too_large;	/* over max_body_size */
	uint64_t	requests_reset;		/* of those counted: reset unfinished */
	uint64_t	requests_client_timeout;	/* the client stopped: 408 */
	uint64_t	requests_trailers_dropped;	/* no chunked body for them */
	uint64_t	requests_bodies_streamed;	/* longer than the hold */
	uint64_t	bytes_received, bytes_sent;	/* UDP payload */
	uint64_t	datagrams_received, datagrams_sent;
	/* datagrams dropped, by reason */
	uint64_t	dropped_invalid;	/* not a QUIC packet we parse */
	uint64_t	dropped_unknown;	/* no connection, not an Initial */
	uint64_t	dropped_refused;	/* new connection not taken */
	uint64_t	dropped_not_unicast;	/* to broadcast or multicast */
	uint64_t	send_blocked;		/* sendmsg would block */
	uint64_t	send_errors;		/* sendmsg failed: lost */
	uint64_t	gso_batches;		/* sendmsg calls of >1 datagram */
	uint64_t	gso_datagrams;		/* datagrams sent in them */
	uint64_t	recv_batches;		/* recvmmsg calls */
	uint64_t	gro_datagrams;		/* received coalesced (GRO) */
	uint64_t	version_negotiations;
	uint64_t	retries_sent;
	uint64_t	tokens_invalid;		/* bad or expired, refused */
	uint64_t	tokens_reused;		/* NEW_TOKEN's, taken before */
	uint64_t	tokens_remembered;	/* now: see replay.h */
	uint64_t	tickets_reused;		/* session tickets, taken before */
	uint64_t	resumed_handshakes;	/* completed with a ticket */
	uint64_t	hello_retries;		/* HelloRetryRequests sent */
	uint64_t	tickets_remembered;	/* now: see tls.c */
	uint64_t	tokens_forgotten;	/* early, for room */
	uint64_t	tickets_forgotten;	/* early, for room */
	uint64_t	tickets_unsure;		/* perhaps taken before: tls.c */
	uint64_t	client_certs_verified;	/* client_ca's, shown and good */
	uint64_t	client_certs_refused;	/* shown and not verified */
	uint64_t	client_certs_missing;	/* none shown where required */
	uint64_t	new_tokens_sent;
	uint64_t	stateless_resets_sent;
	uint64_t	stateless_resets_limited;	/* over the rate */
	uint64_t	upgrade_forwarded;	/* to the process taken over from */
	uint64_t	upgrade_forward_dropped;	/* its link full */
	uint64_t	refusals_unanswered;	/* a client refused too often */
	uint64_t	handshakes_unvalidated;	/* now: address not yet proven */
	uint64_t	path_validations_ok, path_validations_failed;
	uint64_t	migrations;		/* a client moved to a new path */
	uint64_t	early_data_requests;	/* forwarded from 0-RTT */
	uint64_t	early_data_refused;	/* answered 425 */
	uint64_t	upstream_connects, upstream_connect_failures;
	uint64_t	upstream_servers_failed;	/* max_fails reached */
	uint64_t	upstream_conns_current;	/* now: open, in use or idle */
	uint64_t	upstream_reused;
	uint64_t	upstream_retried;	/* pooled connection was closed */
	uint64_t	upstream_next_server;	/* retry_on */
	uint64_t	informational_dropped;	/* 1xx over EX_MAX_INFO, or the
					   client's field section limit */
	uint64_t	upstream_bytes_after_body;	/* unasked-for bytes */
	uint64_t	upstream_queued;	/* now: waiting for max_connections */
	uint64_t	upstream_queued_total;
	uint64_t	upstream_queue_timeouts;	/* 503 after connect_timeout */
	uint64_t	upstream_no_fd;		/* 503: qproxy out of descriptors */
	/* WebSockets (RFC 9220): tunnels after the backend's 101 */
	uint64_t	ws_opened;
	uint64_t	ws_current;		/* now */
	uint64_t	ws_refused;		/* the backend did not upgrade */
	uint64_t	ws_timeouts;		/* idle for tunnel_timeout */
	uint64_t	ws_bytes_to_backend, ws_bytes_to_client;
	/* compress: responses given gzip, and their body bytes */
	uint64_t	compress_responses;
	uint64_t	compress_bytes_in, compress_bytes_out;
	uint64_t	compress_skipped_memory;	/* compress_memory_total */
	uint64_t	compress_memory;	/* now: zlib's, all streams */
	uint64_t	health_checks;		/* health_check: ended */
	uint64_t	health_checks_failed;
	uint64_t	buffer_chunks;		/* now: bufq chunks holding bytes */
	uint64_t	buffer_chunks_free;	/* now: kept for reuse */
	uint64_t	exchanges_free;		/* now: kept for reuse */
	uint64_t	response_bytes;		/* now: response_buffer_total's */
	uint64_t	response_peak_bytes;	/* the most since the start */
	uint64_t	response_peak_chunks;
	uint64_t	request_bytes;		/* now: request_buffer_total's */
	uint64_t	request_peak_bytes;	/* the most since the start */
	uint64_t	unparsed_bytes;		/* now: exchanges' own rbufs */
	uint64_t	h3_bytes;		/* now: nghttp3's live blocks */
	uint64_t	h3_free_bytes;		/* now: nghttp3 blocks kept */
	uint64_t	quic_bytes;		/* now: ngtcp2's, all connections */
	uint64_t	quic_peak_bytes;	/* the most since the start */
	uint64_t	send_pending_bytes;	/* now: trains a socket refused */
	uint64_t	done_stream_bytes;	/* now: exchange_done_bytes */
	uint64_t	configurations;		/* now: generations held */
	uint64_t	loop_busy_windows;	/* 10 ms at batch_busy or more */
	uint64_t	loop_batched_windows;	/* then set to wait batch_delay */
	uint64_t	loop_bulk_windows;	/* BATCH_BULK datagrams a poll */
	uint64_t	certs_expiring;		/* now: within 14 days */
	uint64_t	certs_not_valid;	/* now: expired or not yet valid */
	uint64_t	crls_expiring;		/* now: client_crl's, last quarter */
	uint64_t	crls_out_of_date;	/* now: past their next update */
	uint64_t	vaes_packets;		/* sealed or opened by gcm.c */
	/* requests taken, from their heads to their ends (qproxyctl metrics) */
	struct hist	request_duration;
};

extern struct stats stats;

#endif
