/*
 * test_httpreq: the http handler's body, status classes, Retry-After and
 * reasons, with no server.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "escape.h"
#include "httpreq.h"
#include "tap.h"
#include "wbuf.h"

/* GOT equals WANT, or both are shown. */
static int
is_str(const char *got, const char *want, const char *what)
{
	if (ok(got != NULL && strcmp(got, want) == 0, "%s", what))
		return 1;
	diag("  got:  %s", got ? got : "(null)");
	diag("  want: %s", want);
	return 0;
}

/* http_body's text, a new string of *LEN bytes. */
static char *
body_of(int64_t id, const char *queue, int attempt, int ncols,
    const char *const *names, const char *const *values, size_t *len)
{
	struct wbuf b = { 0 };
	char *text;

	if (http_body(&b, id, queue, attempt, ncols, names, values) == -1 ||
	    (text = strndup(b.p, b.len)) == NULL) {
		wbuf_free(&b);
		return NULL;
	}
	*len = b.len;
	wbuf_free(&b);
	return text;
}

static void
test_body(void)
{
	const char *names[] = { "name", "note", "gone", "bin" };
	const char *values[] = { "a \"b\" \\ c\n\t", "caf\xc3\xa9 \xc2\x85",
	    NULL, "\xff\x01" };
	size_t len = 0;
	char *b;

	b = body_of(42, "tasks", 1, 4, names, values, &len);
	ok(b != NULL && len == strlen(b), "a body of %zu bytes", len);
	is_str(b, "{\"id\":\"42\",\"queue\":\"tasks\",\"attempt\":1,\"row\":{"
	    "\"name\":\"a \\\"b\\\" \\\\ c\\n\\t\","
	    "\"note\":\"caf\xc3\xa9 \\u0085\",\"gone\":null,"
	    "\"bin\":\"\\u00ff\\u0001\"}}", "the body, escaped as JSON");
	free(b);
	b = body_of(-7, "q\"x", 1000000, 0, NULL, NULL, &len);
	is_str(b, "{\"id\":\"-7\",\"queue\":\"q\\\"x\",\"attempt\":1000000,"
	    "\"row\":{}}", "no columns, an odd queue name");
	free(b);
}

/* A body far past the buffer's first size, and the buffer's own edges. */
static void
test_body_grows(void)
{
	enum { N = 100000 };
	char *big = malloc(N + 1), *want, *b;
	const char *names[] = { "big" };
	const char *values[1];
	struct wbuf w = { 0 };
	size_t len = 0, wl;
	char *keep;

	for (size_t i = 0; i < N; i++)
		big[i] = i % 1000 == 999 ? '"' : (char)('a' + i % 26);
	big[N] = '\0';
	values[0] = big;
	want = malloc(2 * N + 128);
	wl = (size_t)sprintf(want, "{\"id\":\"9223372036854775807\",\"queue\":"
	    "\"q\",\"attempt\":2,\"row\":{\"big\":\"");
	for (size_t i = 0; i < N; i++) {
		if (big[i] == '"')
			want[wl++] = '\\';
		want[wl++] = big[i];
	}
	strcpy(want + wl, "\"}}");
	b = body_of(INT64_MAX, "q", 2, 1, names, values, &len);
	ok(b != NULL && len == strlen(want) && strcmp(b, want) == 0,
	    "a body of %zu bytes, escaped whole", len);
	free(b);
	free(want);
	free(big);

	wbuf_puts(&w, "abc");
	wbuf_put_i64(&w, -12);
	keep = w.p;
	ok(w.len == 6 && memcmp(w.p, "abc-12", 6) == 0, "pieces in order");
	wbuf_reset(&w);
	wbuf_putc(&w, 'z');
	ok(w.p == keep && w.len == 1 && w.p[0] == 'z',
	    "a reset keeps the storage");
	wbuf_put(&w, "x", SIZE_MAX);
	wbuf_putc(&w, 'y');
	ok(w.failed && w.len == 1, "too much fails, and what follows is lost");
	wbuf_reset(&w);
	wbuf_putc(&w, 'y');
	ok(!w.failed && w.len == 1 && w.p[0] == 'y', "a reset clears a failure");
	wbuf_free(&w);
	ok(w.p == NULL && w.len == 0 && w.cap == 0, "freed: new again");
}

static void
test_classify(void)
{
	static const struct {
		long status;
		enum http_class want;
	} cases[] = {
		{ 200, HTTP_DONE }, { 204, HTTP_DONE }, { 299, HTTP_DONE },
		{ 100, HTTP_AGAIN }, { 301, HTTP_AGAIN }, { 304, HTTP_AGAIN },
		{ 400, HTTP_REFUSED }, { 401, HTTP_REFUSED },
		{ 404, HTTP_REFUSED }, { 409, HTTP_REFUSED },
		{ 422, HTTP_REFUSED }, { 499, HTTP_REFUSED },
		{ 408, HTTP_AGAIN }, { 425, HTTP_AGAIN }, { 429, HTTP_AGAIN },
		{ 500, HTTP_AGAIN }, { 503, HTTP_AGAIN }, { 599, HTTP_AGAIN },
		{ 600, HTTP_AGAIN }, { 0, HTTP_AGAIN },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(http_classify(cases[i].status) == cases[i].want,
		    "status %ld is class %d", cases[i].status, cases[i].want);
}

static void
test_retry_after(void)
{
	/* Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example. */
	time_t at = 784111777;

	ok(http_retry_after_ms("120", at) == 120000, "delta seconds");
	ok(http_retry_after_ms(" 0 \r\n", at) == 0, "zero, with blanks");
	ok(http_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", at - 5) ==
	    5000, "an HTTP date 5 s ahead");
	ok(http_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT\r\n", at + 60) ==
	    0, "an HTTP date past");
	ok(http_retry_after_ms("99999999999999999999999", at) ==
	    HTTP_RETRY_AFTER_MAX_MS, "a huge delay is capped at 24 h");
	ok(http_retry_after_ms("Sun, 06 Nov 2094 08:49:37 GMT", at) ==
	    HTTP_RETRY_AFTER_MAX_MS, "a far date is capped at 24 h");
	ok(http_retry_after_ms("12abc", at) == -1, "junk after digits");
	ok(http_retry_after_ms("-5", at) == -1, "a negative delay");
	ok(http_retry_after_ms("", at) == -1, "empty");
	ok(http_retry_after_ms("soon", at) == -1, "not a date");
}

static void
test_reason(void)
{
	char out[1024], body[300];

	http_status_reason(out, sizeof(out), 503, "Service Unavailable",
	    "busy\n", 5);
	is_str(out, "HTTP 503 Service Unavailable: busy\\x0a", "a 503");
	http_status_reason(out, sizeof(out), 404, "", "", 0);
	is_str(out, "HTTP 404 Not Found", "no phrase, no body");
	http_status_reason(out, sizeof(out), 499, NULL, "x", 1);
	is_str(out, "HTTP 499: x", "an unknown status");
	http_status_reason(out, sizeof(out), 500, "Oops\x1b[2J", "\xff", 1);
	is_str(out, "HTTP 500 Oops\\x1b[2J: \\xff", "hostile bytes escaped");
	memset(body, 'b', sizeof(body));
	http_status_reason(out, sizeof(out), 500, "E", body, sizeof(body));
	ok(strlen(out) == strlen("HTTP 500 E: ") + HTTP_BODY_IN_REASON,
	    "the body is cut at %d bytes (%zu)", HTTP_BODY_IN_REASON,
	    strlen(out));
	http_status_reason(out, 10, 500, "Internal", body, sizeof(body));
	is_str(out, "HTTP 500 ", "a small buffer holds what fits");
}

static void
test_checks(void)
{
	char buf[256];

	ok(http_check_url("http://127.0.0.1:8080/t", buf, sizeof(buf)) ==
	    NULL, "a plain URL");
	ok(http_check_url("HTTPS://example.com/t?x=1", buf, sizeof(buf)) ==
	    NULL, "https, a query");
	ok(http_check_url("http://[::1]:80/", buf, sizeof(buf)) == NULL,
	    "IPv6");
	ok(http_check_url("ftp://h/", buf, sizeof(buf)) != NULL, "ftp");
	ok(http_check_url("http://u@h/", buf, sizeof(buf)) != NULL, "a user");
	ok(http_check_url("h/x", buf, sizeof(buf)) != NULL, "no scheme");
	ok(http_check_method("POST", buf, sizeof(buf)) == NULL &&
	    http_check_method("PATCH", buf, sizeof(buf)) == NULL &&
	    http_check_method("post", buf, sizeof(buf)) != NULL &&
	    http_check_method("DELETE", buf, sizeof(buf)) != NULL, "methods");
	ok(http_check_header("X-A: b", buf, sizeof(buf)) == NULL &&
	    http_check_header("X-A:", buf, sizeof(buf)) == NULL &&
	    http_check_header("Host: h", buf, sizeof(buf)) == NULL,
	    "headers accepted");
	ok(http_check_header(": b", buf, sizeof(buf)) != NULL &&
	    http_check_header("X A: b", buf, sizeof(buf)) != NULL &&
	    http_check_header("X-A: b\nX-B: c", buf, sizeof(buf)) != NULL &&
	    http_check_header("transfer-encoding: chunked", buf,
	    sizeof(buf)) != NULL &&
	    http_check_header("Idempotency-Key: x", buf, sizeof(buf)) != NULL &&
	    http_check_header("content-type: text/plain", buf,
	    sizeof(buf)) != NULL,
	    "headers refused");
}

/* S of LEN through escape_json (JSON) or escape_text, into OUT. */
static const char *
escaped(char *out, size_t size, const char *s, size_t len, int json)
{
	FILE *f;

	memset(out, 0, size);
	if ((f = fmemopen(out, size, "w")) == NULL)
		return NULL;
	if (json)
		escape_json(f, s, len);
	else
		escape_text(f, s, len);
	fclose(f);
	return out;
}

static void
test_escape(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *json, *text;
	} cases[] = {
		{ "", 0, "\"\"", "" },
		{ "plain", 5, "\"plain\"", "plain" },
		{ "\"x\"", 3, "\"\\\"x\\\"\"", "\"x\"" },
		{ "a\\", 2, "\"a\\\\\"", "a\\x5c" },
		{ "\x7f\x1f", 2, "\"\\u007f\\u001f\"", "\\x7f\\x1f" },
		{ "\xf0\x9f\x98\x80!", 5, "\"\xf0\x9f\x98\x80!\"",
		    "\xf0\x9f\x98\x80!" },
		{ "x\xc2\x9b", 3, "\"x\\u009b\"", "x\\xc2\\x9b" },
		{ "\xe2\x82", 2, "\"\\u00e2\\u0082\"", "\\xe2\\x82" },
		{ "ab\0cd", 5, "\"ab\\u0000cd\"", "ab\\x00cd" },
		{ "\xed\xa0\x80z", 4, "\"\\u00ed\\u00a0\\u0080z\"",
		    "\\xed\\xa0\\x80z" },
	};
	char out[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		is_str(escaped(out, sizeof(out), cases[i].in, cases[i].len, 1),
		    cases[i].json, "escape_json");
		is_str(escaped(out, sizeof(out), cases[i].in, cases[i].len, 0),
		    cases[i].text, "escape_text");
	}
}

int
main(void)
{
	test_body();
	test_body_grows();
	test_escape();
	test_classify();
	test_retry_after();
	test_reason();
	test_checks();
	return done_testing();
}
