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

/* Where escaped bytes go. */
struct out {
	escape_put_fn *put;
	void *arg;
};

static void
out_str(const struct out *o, const char *s)
{
	o->put(o->arg, s, strlen(s));
}

/* C as \u00XX (JSON) or \xXX (text), after PREFIX. */
static void
out_hex(const struct out *o, const char *prefix, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char b[16];
	size_t n = strlen(prefix);

	memcpy(b, prefix, n);
	b[n++] = hex[c >> 4];
	b[n++] = hex[c & 0xf];
	o->put(o->arg, b, n);
}

/*
 * Writes the well-formed UTF-8 sequences of S as they are, but for the C1
 * controls (U+0080..U+009F, C2 80..C2 9F), which go to C1 as their code
 * point: a terminal obeys them as it obeys ESC. Every other byte goes to
 * ONE, ASCII nonzero for a byte below 0x80, but for printable ASCII other
 * than the two bytes of SPECIAL (one twice when there is one), written as
 * it is. Runs of bytes written as they are go out in one piece.
 */
static void
walk_utf8(const struct out *o, const char *s, size_t len,
    const char *special,
    void (*one)(const struct out *, unsigned char, int ascii),
    void (*c1)(const struct out *, unsigned char))
{
	const unsigned char *p = (const unsigned char *)s;
	size_t run = 0;			/* where bytes as they are began */

	for (size_t i = 0; i < len;) {
		size_t n;

		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != special[0] &&
		    p[i] != special[1]) {
			i++;
			continue;
		}
		n = utf8_len(p + i, len - i);
		if (n > 1 && !(n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)) {
			i += n;
			continue;
		}
		if (i > run)
			o->put(o->arg, s + run, i - run);
		if (n == 2) {
			c1(o, p[i + 1]);
			i += 2;
		} else {
			one(o, p[i++], n == 1);
		}
		run = i;
	}
	if (len > run)
		o->put(o->arg, s + run, len - run);
}

static void
json_byte(const struct out *o, unsigned char c, int ascii)
{
	switch (c) {
	case '"':
		out_str(o, "\\\"");
		break;
	case '\\':
		out_str(o, "\\\\");
		break;
	case '\n':
		out_str(o, "\\n");
		break;
	case '\r':
		out_str(o, "\\r");
		break;
	case '\t':
		out_str(o, "\\t");
		break;
	default:
		/* Control bytes, and bytes that are not UTF-8. */
		if (!ascii || c < 0x20 || c == 0x7f)
			out_hex(o, "\\u00", c);
		else
			o->put(o->arg, (const char *)&c, 1);
	}
}

static void
json_c1(const struct out *o, unsigned char cp)
{
	out_hex(o, "\\u00", cp);
}

void
escape_json_to(escape_put_fn *put, void *arg, const char *s, size_t len)
{
	struct out o = { put, arg };

	put(arg, "\"", 1);
	walk_utf8(&o, s, len, "\"\\", json_byte, json_c1);
	put(arg, "\"", 1);
}

static void
put_file(void *f, const char *s, size_t n)
{
	fwrite(s, 1, n, f);
}

void
escape_json(FILE *f, const char *s, size_t len)
{
	escape_json_to(put_file, f, s, len);
}

static void
text_byte(const struct out *o, unsigned char c, int ascii)
{
	if (!ascii || c < 0x20 || c == 0x7f || c == '\\')
		out_hex(o, "\\x", c);
	else
		o->put(o->arg, (const char *)&c, 1);
}

/* U+0085 as the bytes that spell it: \xc2\x85. */
static void
text_c1(const struct out *o, unsigned char cp)
{
	out_hex(o, "\\xc2\\x", cp);
}

void
escape_text(FILE *f, const char *s, size_t len)
{
	struct out o = { put_file, f };

	walk_utf8(&o, s, len, "\\\\", text_byte, text_c1);
}
