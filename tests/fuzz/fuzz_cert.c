/*
 * fuzz_cert: tls_cert_subject (src/tls.c), the subject of a client's
 * certificate as client_cert_header tells a backend of it, on any bytes.
 * wolfSSL hands it only certificates it parsed and verified, but the walk
 * is qproxy's own; here any DER, or none, must give a name RFC 4514's
 * grammar reads (section 3: attributes "type=value" joined by ',' and '+',
 * a value's specials escaped, nothing outside printable ASCII), or NULL.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#include "fuzz.h"

static bool
is_hex(int c)
{
	return isdigit(c) || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* A type: a name of letters, digits and '-', or an OID's dotted numbers. */
static const char *
check_type(const char *p)
{
	if (isalpha((unsigned char)*p)) {
		while (isalnum((unsigned char)*p) || *p == '-')
			p++;
		return p;
	}
	for (;;) {
		FUZZ_CHECK(isdigit((unsigned char)*p));
		/* no leading zero in a number but 0 itself */
		FUZZ_CHECK(!(*p == '0' && isdigit((unsigned char)p[1])));
		while (isdigit((unsigned char)*p))
			p++;
		if (*p != '.')
			return p;
		p++;
	}
}

/* A value: '#' and hex pairs, or a string with its specials escaped. */
static const char *
check_value(const char *p)
{
	const char *start = p;
	bool escaped_space = false;

	if (*p == '#') {
		for (p++; is_hex((unsigned char)p[0]) &&
		    is_hex((unsigned char)p[1]); p += 2)
			;
		FUZZ_CHECK(p - start > 1 && (p - start) % 2 == 1);
		return p;
	}
	while (*p != '\0' && *p != ',' && *p != '+') {
		unsigned char c = (unsigned char)*p;

		FUZZ_CHECK(c >= 0x20 && c < 0x7f);
		escaped_space = false;
		if (c == '\\') {
			if (is_hex((unsigned char)p[1]) &&
			    is_hex((unsigned char)p[2])) {
				p += 3;
				continue;
			}
			FUZZ_CHECK(p[1] != '\0' &&
			    strchr(" \"#+,;<=>\\", p[1]) != NULL);
			escaped_space = p[1] == ' ';
			p += 2;
			continue;
		}
		FUZZ_CHECK(strchr("\";<>", c) == NULL);
		FUZZ_CHECK(p != start || (c != ' ' && c != '#'));
		p++;
	}
	FUZZ_CHECK(p == start || p[-1] != ' ' || escaped_space);
	return p;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *dn = tls_cert_subject(data, size);
	const char *p;

	if (dn == NULL || dn[0] == '\0') {
		free(dn);
		return 0;
	}
	for (p = dn;; p++) {
		p = check_type(p);
		FUZZ_CHECK(*p == '=');
		p = check_value(p + 1);
		if (*p == '\0')
			break;
		FUZZ_CHECK(*p == ',' || *p == '+');
	}
	free(dn);
	return 0;
}
