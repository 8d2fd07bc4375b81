/*
 * merge.c: one reply out of the workers' replies to the same command
 * (workers.c). Their texts have the same shape and differ in the numbers,
 * so they are walked side by side, token by token:
 *
 * - an integer is the sum of the workers' (connections, requests, bytes);
 * - a decimal (a backend server's mean time to first byte, a route's
 *   mean duration) is the mean of the workers', weighted by the number
 *   of what it is the mean of: the last number before it in a column
 *   headed RESPONSES (a server's response heads) or REQUESTS, or after
 *   the key "responses" or "requests"; without one, the mean of those
 *   that are not 0;
 * - a decimal on a line that begins with a word ending in "_sum" (a
 *   Prometheus histogram's, in qproxyctl metrics) is the sum;
 * - a value every worker has alike (uptime, the configuration generation,
 *   the certificates' counts, a server's weight, the session tickets
 *   remembered) is the largest, by the word before it;
 * - words that differ, such as a backend server's state, are all shown,
 *   joined by '/' ("up/down");
 * - anything else that differs makes the texts unmergeable: -1.
 *
 * A number is a word, not a count, in an address ("127.0.0.1:4433",
 * "[2001:db8::1:2]:4433"), between quotes (a JSON string, such as a
 * listener named "443") and as the first field of a line (a table's name
 * column). A run of spaces is the first text's, less what a longer number
 * took, so that columns stay in place where they can.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge.h"

enum tok_kind { TOK_INT, TOK_DEC, TOK_WORD, TOK_SPACE, TOK_OTHER };

struct tok {
	enum tok_kind	 kind;
	const char	*p;
	size_t		 len;
};

/* The values that are the same in every worker: the largest is shown. */
static const char *const merge_alike[] = {
	"uptime", "generation", "certificates_expiring",
	"certificates_not_valid", "crls_expiring", "crls_out_of_date",
	"weight",
	"tickets_remembered",	/* one table for all workers (tls.c) */
	/* their names in qproxyctl metrics */
	"qproxy_uptime_seconds", "qproxy_configuration_generation",
	"qproxy_tls_certificates_expiring",
	"qproxy_tls_certificates_not_valid",
	"qproxy_tls_crls_expiring", "qproxy_tls_crls_out_of_date",
	"qproxy_quic_tickets_remembered",
};

enum merge_how { HOW_SUM, HOW_MAX, HOW_MEAN };

static bool
word_char(int c)
{
	return isalnum(c) || c == '_' || c == '.' || c == '-' || c == '/' ||
	    c == '[' || c == ']';
}

/*
 * The token of s at i; its kind is a number's only when all of it is, and
 * it counts (above). first: it begins its line's first field.
 */
static void
tok_at(const char *s, size_t i, bool first, struct tok *t)
{
	size_t j = i, dots = 0;
	bool digits = true;

	t->p = s + i;
	if (s[i] == ' ') {
		while (s[j] == ' ')
			j++;
		t->kind = TOK_SPACE;
		t->len = j - i;
		return;
	}
	if (!word_char((unsigned char)s[i])) {
		t->kind = TOK_OTHER;
		t->len = 1;
		return;
	}
	for (; word_char((unsigned char)s[j]); j++) {
		if (s[j] == '.')
			dots++;
		else if (!isdigit((unsigned char)s[j]))
			digits = false;
	}
	t->len = j - i;
	t->kind = TOK_WORD;
	if (!digits || dots > 1 || s[i] == '.' || s[j - 1] == '.' || first)
		return;
	/* after "host:", "]:" or "::", a port or part of an address */
	if (i >= 2 && s[i - 1] == ':' && s[i - 2] != '"')
		return;
	/* "443": a string */
	if (i >= 1 && s[i - 1] == '"' && s[j] == '"')
		return;
	t->kind = dots == 0 ? TOK_INT : TOK_DEC;
}

static bool
tok_eq(const struct tok *a, const struct tok *b)
{
	return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
}

static bool
alpha_word(const struct tok *t)
{
	for (size_t i = 0; i < t->len; i++)
		if (!islower((unsigned char)t->p[i]) && t->p[i] != '_')
			return false;
	return true;
}

static bool
alike(const struct tok *word)
{
	for (size_t i = 0; i < sizeof(merge_alike) / sizeof(merge_alike[0]);
	    i++)
		if (word->len == strlen(merge_alike[i]) &&
		    memcmp(word->p, merge_alike[i], word->len) == 0)
			return true;
	return false;
}

/*
 * Appends the merged number of the n tokens in t; returns its length.
 * An integer is summed unless how is HOW_MAX. A decimal's HOW_MEAN is
 * weighted by each text's requests (weight), or without weight the mean
 * of those that are not 0.
 */
static size_t
put_number(struct strbuf *out, const struct tok *t, size_t n,
    enum merge_how how, const unsigned long long *weight)
{
	bool max = how == HOW_MAX;
	char buf[64];
	int len;

	if (t[0].kind == TOK_INT) {
		unsigned long long v = 0, x;

		for (size_t k = 0; k < n; k++) {
			x = strtoull(t[k].p, NULL, 10);
			v = max ? (x > v ? x : v) : v + x;
		}
		len = snprintf(buf, sizeof(buf), "%llu", v);
	} else {
		const char *dot = memchr(t[0].p, '.', t[0].len);
		int prec = (int)(t[0].len - (size_t)(dot - t[0].p) - 1);
		double v = 0., x, m = 0.;

		for (size_t k = 0; k < n; k++) {
			x = strtod(t[k].p, NULL);
			if (max)
				v = x > v ? x : v;
			else if (how == HOW_SUM)
				v += x;
			else if (weight != NULL) {
				v += x * (double)weight[k];
				m += (double)weight[k];
			} else if (x != 0.) {
				v += x;
				m += 1.;
			}
		}
		if (!max && m > 0.)
			v /= m;
		len = snprintf(buf, sizeof(buf), "%.*f", prec, v);
	}
	strbuf_append(out, buf, (size_t)len);
	return (size_t)len;
}

static bool
word_is(const struct tok *t, const char *w)
{
	return t->len == strlen(w) && memcmp(t->p, w, t->len) == 0;
}

static bool
word_ends(const struct tok *t, const char *w)
{
	size_t n = strlen(w);

	return t->len >= n && memcmp(t->p + t->len - n, w, n) == 0;
}

int
merge_replies(const char *const *texts, size_t n, struct strbuf *out)
{
	struct tok t[MERGE_MAX], word = { TOK_WORD, "", 0 }, head = word;
	enum merge_how how;
	size_t pos[MERGE_MAX], excess = 0, k, len;
	unsigned long long weight[MERGE_MAX];
	int field = 0, req_col = -1;	/* fields from 1; the weight's */
	bool same, in_field = false, weighted = false;

	if (n == 0 || n > MERGE_MAX)
		return -1;
	memset(pos, 0, sizeof(pos));
	while (texts[0][pos[0]] != '\0') {
		bool starts = texts[0][pos[0]] != ' ' && !in_field;

		for (k = 0; k < n; k++) {
			if (texts[k][pos[k]] == '\0')
				return -1;
			tok_at(texts[k], pos[k], starts && field == 0, &t[k]);
			pos[k] += t[k].len;
		}
		if (t[0].kind == TOK_SPACE)
			in_field = false;
		else if (t[0].kind == TOK_OTHER && t[0].p[0] == '\n') {
			/* a blank line ends a table */
			if (field == 0)
				req_col = -1;
			field = 0;
			in_field = false;
			weighted = false;
		} else if (!in_field) {
			field++;
			in_field = true;
			if (field == 1)
				head = t[0];
		}
		if (t[0].kind == TOK_WORD && (word_is(&t[0], "REQUESTS") ||
		    word_is(&t[0], "RESPONSES")))
			req_col = field;
		if (t[0].kind == TOK_INT && ((req_col > 0 && field == req_col) ||
		    word_is(&word, "requests") || word_is(&word, "responses"))) {
			for (k = 0; k < n; k++)
				weight[k] = strtoull(t[k].p, NULL, 10);
			weighted = true;
		}
		same = true;
		for (k = 1; k < n; k++)
			if (t[k].kind != t[0].kind)
				return -1;
			else if (!tok_eq(&t[k], &t[0]))
				same = false;
		switch (t[0].kind) {
		case TOK_SPACE:
			len = t[0].len;
			if (excess > 0) {
				size_t cut = excess < len - 1 ? excess : len - 1;

				len -= cut;
			}
			strbuf_append(out, t[0].p, len);
			excess = 0;
			continue;
		case TOK_INT:
		case TOK_DEC:
			how = alike(&word) ? HOW_MAX : t[0].kind == TOK_INT ||
			    word_ends(&head, "_sum") ? HOW_SUM : HOW_MEAN;
			len = put_number(out, t, n, how,
			    t[0].kind == TOK_DEC && weighted ? weight : NULL);
			excess = len > t[0].len ? len - t[0].len : 0;
			continue;
		case TOK_WORD:
			word = t[0];
			if (same) {
				strbuf_append(out, t[0].p, t[0].len);
				excess = 0;
				continue;
			}
			len = 0;
			for (k = 0; k < n; k++) {
				size_t j;

				if (!alpha_word(&t[k]))
					return -1;
				for (j = 0; j < k; j++)
					if (tok_eq(&t[j], &t[k]))
						break;
				if (j < k)
					continue;
				if (len > 0)
					strbuf_append(out, "/", 1);
				strbuf_append(out, t[k].p, t[k].len);
				len += t[k].len + (len > 0);
			}
			excess = len > t[0].len ? len - t[0].len : 0;
			continue;
		case TOK_OTHER:
			if (!same)
				return -1;
			strbuf_append(out, t[0].p, 1);
			continue;
		}
	}
	for (k = 1; k < n; k++)
		if (texts[k][pos[k]] != '\0')
			return -1;
	return 0;
}
