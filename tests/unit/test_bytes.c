/*
 * test_bytes.c: the word-at-a-time scans of bytes.h against plain byte
 * loops: every byte value at every position of every length up to 40, and
 * two start alignments, so that the word loop, its overlapping last word
 * and the short tail are all exercised.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "bytes.h"
#include "unit.h"

#define MAXLEN	40

static bool
ref_ctl(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
			return true;
	return false;
}

static bool
ref_nul_cr_lf(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == 0 || s[i] == '\r' || s[i] == '\n')
			return true;
	return false;
}

static void
ref_lower(uint8_t *d, const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		d[i] = (uint8_t)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
}

/*
 * A buffer of len bytes at offset off, all a harmless filler but one byte
 * at pos set to c; the three scans must agree with the references. Counts
 * disagreements rather than checking each of the million cases.
 */
static int
one_case(uint8_t filler, size_t off, size_t len, size_t pos, uint8_t c)
{
	uint8_t buf[MAXLEN + 16], got[MAXLEN + 16], want[MAXLEN + 16];
	uint8_t *s = buf + off;
	int bad = 0;

	memset(buf, filler, sizeof(buf));
	if (pos < len)
		s[pos] = c;
	bad += bytes_has_ctl(s, len) != ref_ctl(s, len);
	bad += bytes_has_nul_cr_lf(s, len) != ref_nul_cr_lf(s, len);
	memset(got, 0xaa, sizeof(got));
	memcpy(want, got, sizeof(want));
	bytes_lower(got + off, s, len);
	ref_lower(want + off, s, len);
	/* the bytes around the destination are left alone */
	bad += memcmp(got, want, sizeof(got)) != 0;
	return bad;
}

static void
test_every_byte_everywhere(void)
{
	/*
	 * fillers: a letter, an uppercase one, HT (allowed, but below 0x20),
	 * and bytes with the high bit set, which lowering must leave alone
	 */
	static const uint8_t fillers[] = { 'a', 'Q', '\t', 0x80, 0xda };
	int bad = 0;

	for (size_t f = 0; f < sizeof(fillers); f++)
		for (size_t off = 0; off < 8; off += 3)
			for (size_t len = 0; len <= MAXLEN; len++)
				for (size_t pos = 0; pos <= len; pos++)
					for (unsigned c = 0; c < 256; c++)
						bad += one_case(fillers[f], off,
						    len, pos, (uint8_t)c);
	CHECK_EQ_INT(bad, 0);
}

static void
test_examples(void)
{
	uint8_t out[64];
	const char *mixed = "Content-Type X-Forwarded-For ETag";

	CHECK(!bytes_has_ctl((const uint8_t *)"text/html; charset=utf-8", 24));
	CHECK(!bytes_has_ctl((const uint8_t *)"a\tb\tc\td\te\tf\tg\th", 15));
	CHECK(bytes_has_ctl((const uint8_t *)"0123456789abcde\x7f", 16));
	CHECK(bytes_has_ctl((const uint8_t *)"0123456789abcdef\r", 17));
	CHECK(bytes_has_nul_cr_lf((const uint8_t *)"012345678\n", 10));
	CHECK(!bytes_has_nul_cr_lf((const uint8_t *)"0123\t56789\x7f", 11));
	bytes_lower(out, (const uint8_t *)mixed, strlen(mixed));
	out[strlen(mixed)] = '\0';
	CHECK_EQ_STR((char *)out, "content-type x-forwarded-for etag");
	/* '@' and '[' border 'A' and 'Z' */
	bytes_lower(out, (const uint8_t *)"@AZ[`az{@AZ[`az{", 16);
	CHECK(memcmp(out, "@az[`az{@az[`az{", 16) == 0);
	CHECK(bytes_istchar('A') && bytes_istchar('~') && !bytes_istchar(':'));
	CHECK(bytes_islowtchar('a') && !bytes_islowtchar('A'));
	CHECK(!bytes_istchar(0) && !bytes_istchar(0x80));
}

int
main(void)
{
	test_every_byte_everywhere();
	test_examples();
	UNIT_DONE();
}
