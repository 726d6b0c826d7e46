/*
 * escape: bytes from anywhere (a row, a reply, a server's answer) made
 * safe to print: as a JSON string, or as text for a terminal or a log.
 * taskworkerctl prints with it; the http handler builds its bodies and
 * reasons with it, so both escape alike.
 */
#include <stdio.h>
#include <string.h>

#include "escape.h"

/* Length of the well-formed UTF-8 sequence at S (at most LEFT), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t left)
{
	size_t n;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n > left)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/*
 * Writes the well-formed UTF-8 sequences of S as they are, but for the C1
 * controls (U+0080..U+009F, C2 80..C2 9F), which go to C1 as their code
 * point: a terminal obeys them as it obeys ESC. Every other byte goes to
 * ONE, ASCII nonzero for a byte below 0x80, but for printable ASCII not
 * in SPECIAL, written as it is. Runs of bytes written as they are go in
 * one fwrite().
 */
static void
walk_utf8(FILE *f, const char *s, size_t len, const char *special,
    void (*one)(FILE *, unsigned char, int ascii),
    void (*c1)(FILE *, unsigned char))
{
	const unsigned char *p = (const unsigned char *)s;
	size_t run = 0;			/* where bytes as they are began */

	for (size_t i = 0; i < len;) {
		size_t n;

		if (p[i] >= 0x20 && p[i] < 0x7f && strchr(special, p[i]) ==
		    NULL) {
			i++;
			continue;
		}
		n = utf8_len(p + i, len - i);
		if (n > 1 && !(n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)) {
			i += n;
			continue;
		}
		fwrite(p + run, 1, i - run, f);
		if (n == 2) {
			c1(f, p[i + 1]);
			i += 2;
		} else {
			one(f, p[i++], n == 1);
		}
		run = i;
	}
	fwrite(p + run, 1, len - run, f);
}

static void
json_byte(FILE *f, unsigned char c, int ascii)
{
	switch (c) {
	case '"':
		fputs("\\\"", f);
		break;
	case '\\':
		fputs("\\\\", f);
		break;
	case '\n':
		fputs("\\n", f);
		break;
	case '\r':
		fputs("\\r", f);
		break;
	case '\t':
		fputs("\\t", f);
		break;
	default:
		/* Control bytes, and bytes that are not UTF-8. */
		if (!ascii || c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
}

static void
json_c1(FILE *f, unsigned char cp)
{
	fprintf(f, "\\u%04x", cp);
}

void
escape_json(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	walk_utf8(f, s, len, "\"\\", json_byte, json_c1);
	fputc('"', f);
}

static void
text_byte(FILE *f, unsigned char c, int ascii)
{
	if (!ascii || c < 0x20 || c == 0x7f || c == '\\')
		fprintf(f, "\\x%02x", c);
	else
		fputc(c, f);
}

/* U+0085 as the bytes that spell it: \xc2\x85. */
static void
text_c1(FILE *f, unsigned char cp)
{
	fprintf(f, "\\xc2\\x%02x", cp);
}

void
escape_text(FILE *f, const char *s, size_t len)
{
	walk_utf8(f, s, len, "\\", text_byte, text_c1);
}
