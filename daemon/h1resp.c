/*
 * h1resp: an HTTP/1.x answer, read incrementally (RFC 9112). Lines (the
 * status line, headers, chunk sizes, trailers) are handled where they lie
 * in the caller's buffer; only one split between two reads is copied.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h1resp.h"

#define H1_CHUNK_LINE_MAX	1024	/* a chunk's size and extensions */

void
h1_resp_init(struct h1_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->clen = -1;
}

void
h1_resp_clear(struct h1_resp *r)
{
	free(r->line);
	h1_resp_init(r);
}

/* Whether the comma-separated list V of LEN holds TOKEN. */
static int
has_token(const char *v, size_t len, const char *token)
{
	size_t tl = strlen(token), i = 0, s, e;

	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return 1;
	}
	return 0;
}

/* Whether the last coding of the list V of LEN is chunked. */
static int
last_is_chunked(const char *v, size_t len)
{
	size_t e = len, s;

	while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
		e--;
	s = e;
	while (s > 0 && v[s - 1] != ',' && v[s - 1] != ' ' && v[s - 1] != '\t')
		s--;
	return e - s == 7 && strncasecmp(v + s, "chunked", 7) == 0;
}

static int
fail(struct h1_resp *r, const char *why)
{
	r->err = why;
	return -1;
}

/* "HTTP/1.1 503 Service Unavailable" */
static int
status_line(struct h1_resp *r, const char *l, size_t len)
{
	size_t i, e;

	if (len < 12 || strncmp(l, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)
	    l[7]) || l[8] != ' ')
		return fail(r, "no HTTP/1.x status line");
	for (i = 9; i < 12; i++)
		if (!isdigit((unsigned char)l[i]))
			return fail(r, "the status is not 3 digits");
	if (len > 12 && l[12] != ' ')
		return fail(r, "the status is not 3 digits");
	r->minor = l[7] - '0';
	r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	if (r->status < 100)
		return fail(r, "a status below 100");
	i = len > 13 ? 13 : len;
	for (e = len; e > i && (l[e - 1] == ' ' || l[e - 1] == '\t'); e--)
		;
	if (e - i > H1_PHRASE_MAX)
		e = i + H1_PHRASE_MAX;
	memcpy(r->phrase, l + i, e - i);
	r->phrase[e - i] = '\0';
	r->state = H1S_HEADER;
	return 0;
}

static int
header_line(struct h1_resp *r, const char *l, size_t len)
{
	const char *colon = memchr(l, ':', len), *v;
	size_t nlen, vlen;
	long long n = 0;

	if (l[0] == ' ' || l[0] == '\t')
		return 0;		/* obsolete folding: nothing we read */
	if (colon == NULL || colon == l)
		return fail(r, "a header line without a name");
	nlen = (size_t)(colon - l);
	for (v = colon + 1; v < l + len && (*v == ' ' || *v == '\t'); v++)
		;
	vlen = (size_t)(l + len - v);
	while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(l, name, nlen) == 0)
	if (IS("Content-Length")) {
		if (vlen == 0)
			return fail(r, "an empty Content-Length");
		for (size_t i = 0; i < vlen; i++) {
			if (!isdigit((unsigned char)v[i]) ||
			    n > (0x7fffffffffffffffLL - 9) / 10)
				return fail(r, "a bad Content-Length");
			n = n * 10 + (v[i] - '0');
		}
		if (r->clen != -1 && r->clen != n)
			return fail(r, "two different Content-Lengths");
		r->clen = n;
	} else if (IS("Transfer-Encoding")) {
		/* RFC 9112 6.3: it overrides Content-Length. */
		r->te = 1;
		r->chunked = last_is_chunked(v, vlen);
	} else if (IS("Connection")) {
		if (has_token(v, vlen, "close"))
			r->close = 1;
		if (has_token(v, vlen, "keep-alive"))
			r->keep_alive = 1;
	} else if (IS("Retry-After")) {
		if (vlen > H1_RETRY_AFTER_MAX)
			vlen = H1_RETRY_AFTER_MAX;
		memcpy(r->retry_after, v, vlen);
		r->retry_after[vlen] = '\0';
	}
#undef IS
	return 0;
}

/* The empty line after the headers: what the body is. */
static int
headers_end(struct h1_resp *r)
{
	if (r->status == 101)
		return fail(r, "101 Switching Protocols was not asked for");
	if (r->status < 200) {
		/* 100 Continue, 103 Early Hints: the answer comes next. */
		int close = r->close;

		r->state = H1S_STATUS;
		r->status = 0;
		r->clen = -1;
		r->chunked = r->keep_alive = r->te = 0;
		r->close = close;
		r->phrase[0] = r->retry_after[0] = '\0';
		return 0;
	}
	if (r->minor == 0 && !r->keep_alive)
		r->close = 1;
	if (r->status == 204 || r->status == 304) {
		r->state = H1S_END;
	} else if (r->chunked) {
		r->state = H1S_CHUNK_SIZE;
	} else if (r->te || r->clen == -1) {
		/* Not chunked, or no length: the body runs to the close. */
		r->close = 1;
		r->state = H1S_UNTIL_CLOSE;
	} else {
		r->left = (unsigned long long)r->clen;
		r->state = r->left ? H1S_BODY : H1S_END;
	}
	return 0;
}

static int
chunk_size(struct h1_resp *r, const char *l, size_t len)
{
	unsigned long long n = 0;
	size_t i;
	int d;

	for (i = 0; i < len && isxdigit((unsigned char)l[i]); i++) {
		if (n >> 60)
			return fail(r, "a chunk size too large");
		d = isdigit((unsigned char)l[i]) ? l[i] - '0' :
		    (tolower((unsigned char)l[i]) - 'a' + 10);
		n = n * 16 + (unsigned)d;
	}
	if (i == 0 || (i < len && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
		return fail(r, "a bad chunk size");
	r->left = n;
	r->state = n ? H1S_CHUNK_DATA : H1S_TRAILER;
	return 0;
}

/* One whole line L of LEN, its CR LF taken off. */
static int
line(struct h1_resp *r, const char *l, size_t len)
{
	switch (r->state) {
	case H1S_STATUS:
		return status_line(r, l, len);
	case H1S_HEADER:
		return len == 0 ? headers_end(r) : header_line(r, l, len);
	case H1S_CHUNK_SIZE:
		return chunk_size(r, l, len);
	case H1S_CHUNK_END:
		if (len != 0)
			return fail(r, "a chunk longer than its size");
		r->state = H1S_CHUNK_SIZE;
		return 0;
	case H1S_TRAILER:
		if (len == 0)
			r->state = H1S_END;
		return 0;
	default:
		return fail(r, "internal: a line in the body");
	}
}

/* Bytes of the body: the first kept, the rest counted. */
static void
body(struct h1_resp *r, const char *b, size_t n)
{
	if (r->headlen < sizeof(r->head)) {
		size_t keep = sizeof(r->head) - r->headlen;

		memcpy(r->head + r->headlen, b, keep < n ? keep : n);
		r->headlen += keep < n ? keep : n;
	}
	r->got += n;
}

static int
in_lines(const struct h1_resp *r)
{
	return r->state == H1S_STATUS || r->state == H1S_HEADER ||
	    r->state == H1S_CHUNK_SIZE || r->state == H1S_CHUNK_END ||
	    r->state == H1S_TRAILER;
}

/* A line of BUF from I, up to its LF: taken whole or kept for the next. */
static int
take_line(struct h1_resp *r, const char *buf, size_t n, size_t *i)
{
	const char *nl = memchr(buf + *i, '\n', n - *i);
	size_t len = nl ? (size_t)(nl - (buf + *i)) : n - *i;
	int chunk = r->state == H1S_CHUNK_SIZE || r->state == H1S_CHUNK_END;
	const char *l;
	int rc;

	/* Headers and trailers together are bounded, a chunk's line alone. */
	if (chunk ? r->linelen + len > H1_CHUNK_LINE_MAX :
	    (r->hbytes += len + (nl != NULL)) > H1_HEADERS_MAX)
		return fail(r, chunk ? "a chunk size line too long" :
		    "headers longer than 65536 bytes");
	if (nl == NULL || r->linelen > 0) {
		if (r->linelen + len > r->linecap) {
			size_t cap = r->linecap ? r->linecap : 256;
			char *p;

			while (cap < r->linelen + len)
				cap *= 2;
			if ((p = realloc(r->line, cap)) == NULL)
				return fail(r, "out of memory");
			r->line = p;
			r->linecap = cap;
		}
		memcpy(r->line + r->linelen, buf + *i, len);
		r->linelen += len;
		*i += len;
		if (nl == NULL)
			return 0;
		l = r->line;
		len = r->linelen;
		r->linelen = 0;
	} else {
		l = buf + *i;
		*i += len;
	}
	(*i)++;				/* the LF */
	if (len > 0 && l[len - 1] == '\r')
		len--;
	rc = line(r, l, len);
	if (r->linecap > 4096 && r->linelen == 0) {
		/* A long header was the exception: give it back. */
		free(r->line);
		r->line = NULL;
		r->linecap = 0;
	}
	return rc;
}

enum h1_step
h1_resp_feed(struct h1_resp *r, const char *buf, size_t n, size_t max_body,
    size_t *used)
{
	size_t i = 0, k;

	if (n > 0)
		r->started = 1;
	while (i < n && r->state != H1S_END) {
		if (in_lines(r)) {
			if (take_line(r, buf, n, &i) == -1)
				return H1_ERROR;
			continue;
		}
		k = n - i;
		if (r->state != H1S_UNTIL_CLOSE && k > r->left)
			k = (size_t)r->left;
		if (r->got + k > max_body) {
			/* Cut: what is kept is enough, the rest never read. */
			body(r, buf + i, max_body - r->got);
			r->got = max_body + 1;
			r->cut = r->close = 1;
			r->state = H1S_END;
			i = n;
			break;
		}
		body(r, buf + i, k);
		i += k;
		if (r->state == H1S_UNTIL_CLOSE)
			continue;
		r->left -= k;
		if (r->left == 0)
			r->state = r->state == H1S_BODY ? H1S_END : H1S_CHUNK_END;
	}
	*used = i;
	if (r->state == H1S_END) {
		free(r->line);
		r->line = NULL;
		r->linelen = r->linecap = 0;
		return H1_DONE;
	}
	return H1_MORE;
}

enum h1_step
h1_resp_eof(struct h1_resp *r)
{
	if (r->state == H1S_UNTIL_CLOSE || r->state == H1S_END) {
		r->state = H1S_END;
		r->close = 1;
		return H1_DONE;
	}
	r->err = r->started ? "the connection closed in the middle of the "
	    "answer" : "the server closed the connection without an answer";
	return H1_ERROR;
}
