/*
 * httpreq: the http handler's words, apart from its sockets: what a
 * setting may hold, the body of a task, and how an answer reads.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "escape.h"
#include "httpreq.h"
#include "wbuf.h"

const char *
http_check_url(const char *url, char *buf, size_t size)
{
	CURLU *u;
	CURLUcode rc;
	char *part = NULL;
	const char *why = NULL;

	if (url[0] == '\0')
		return NULL;		/* required only by an http handler */
	if ((u = curl_url()) == NULL)
		return "out of memory";
	rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (rc != CURLUE_OK) {
		snprintf(buf, size, "\"%.200s\" is not a URL: %s", url,
		    curl_url_strerror(rc));
		why = buf;
	} else if (curl_url_get(u, CURLUPART_SCHEME, &part, 0) != CURLUE_OK ||
	    (strcasecmp(part, "http") != 0 && strcasecmp(part, "https") != 0)) {
		snprintf(buf, size, "\"%.200s\": only http:// and https:// "
		    "URLs are sent to", url);
		why = buf;
	} else {
		curl_free(part);
		part = NULL;
		if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK ||
		    curl_url_get(u, CURLUPART_PASSWORD, &part, 0) ==
		    CURLUE_OK)
			why = "a user or password in the URL would be logged; "
			    "use handler.token_file or the http-token "
			    "credential";
		else if (curl_url_get(u, CURLUPART_HOST, &part, 0) !=
		    CURLUE_OK || part[0] == '\0')
			why = "the URL names no host";
	}
	curl_free(part);
	curl_url_cleanup(u);
	return why;
}

const char *
http_check_method(const char *method, char *buf, size_t size)
{
	(void)buf;
	(void)size;
	if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
	    strcmp(method, "PATCH") == 0)
		return NULL;
	return "must be POST, PUT or PATCH (the task is the body)";
}

/* A byte of a header name: an RFC 9110 token character. */
static int
tchar(unsigned char c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

const char *
http_check_header(const char *header, char *buf, size_t size)
{
	static const char *const ours[] = { "Content-Length", "Content-Type",
	    "Transfer-Encoding", "Connection", "Idempotency-Key", "Expect",
	    "Upgrade", "TE", "Keep-Alive", "Proxy-Connection" };
	const unsigned char *p = (const unsigned char *)header;
	size_t n = 0;

	while (tchar(p[n]))
		n++;
	if (n == 0 || p[n] != ':') {
		snprintf(buf, size, "expected \"Name: value\", not "
		    "\"%.100s\"", header);
		return buf;
	}
	for (const unsigned char *v = p + n + 1; *v != '\0'; v++)
		if ((*v < 0x20 && *v != '\t') || *v == 0x7f) {
			snprintf(buf, size, "\"%.*s\": control characters in "
			    "the value", (int)(n > 100 ? 100 : n), header);
			return buf;
		}
	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		if (strlen(ours[i]) == n && strncasecmp(header, ours[i], n) ==
		    0) {
			snprintf(buf, size, "%s is set by taskworkerd itself",
			    ours[i]);
			return buf;
		}
	return NULL;
}

static void
put_wbuf(void *b, const char *s, size_t n)
{
	wbuf_put(b, s, n);
}

static void
put_json(struct wbuf *b, const char *s)
{
	escape_json_to(put_wbuf, b, s, strlen(s));
}

int
http_body(struct wbuf *b, int64_t id, const char *queue, int attempt,
    int ncols, const char *const *names, const char *const *values)
{
	wbuf_puts(b, "{\"id\":\"");
	wbuf_put_i64(b, id);
	wbuf_puts(b, "\",\"queue\":");
	put_json(b, queue);
	wbuf_puts(b, ",\"attempt\":");
	wbuf_put_i64(b, attempt);
	wbuf_puts(b, ",\"row\":{");
	for (int i = 0; i < ncols; i++) {
		if (i > 0)
			wbuf_putc(b, ',');
		put_json(b, names[i]);
		wbuf_putc(b, ':');
		if (values[i] == NULL)
			wbuf_puts(b, "null");
		else
			put_json(b, values[i]);
	}
	wbuf_puts(b, "}}");
	return b->failed ? -1 : 0;
}

enum http_class
http_classify(long status)
{
	if (status >= 200 && status <= 299)
		return HTTP_DONE;
	if (status >= 400 && status <= 499 && status != 408 &&
	    status != 425 && status != 429)
		return HTTP_REFUSED;
	return HTTP_AGAIN;
}

long long
http_retry_after_ms(const char *value, time_t now)
{
	const char *p = value;
	char *end;
	long long ms;
	time_t at;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p >= '0' && *p <= '9') {
		unsigned long long s;

		errno = 0;
		s = strtoull(p, &end, 10);
		while (*end == ' ' || *end == '\t' || *end == '\r' ||
		    *end == '\n')
			end++;
		if (*end != '\0')
			return -1;
		if (errno == ERANGE || s > HTTP_RETRY_AFTER_MAX_MS / 1000)
			return HTTP_RETRY_AFTER_MAX_MS;
		return (long long)s * 1000;
	}
	if (*p == '\0' || (at = curl_getdate(p, NULL)) == -1)
		return -1;
	if (at <= now)
		return 0;
	if (at - now > HTTP_RETRY_AFTER_MAX_MS / 1000)
		return HTTP_RETRY_AFTER_MAX_MS;
	ms = (long long)(at - now) * 1000;
	return ms;
}

const char *
http_phrase(long status)
{
	static const struct {
		long status;
		const char *phrase;
	} phrases[] = {
		{ 100, "Continue" }, { 101, "Switching Protocols" },
		{ 200, "OK" }, { 201, "Created" }, { 202, "Accepted" },
		{ 203, "Non-Authoritative Information" },
		{ 204, "No Content" }, { 205, "Reset Content" },
		{ 206, "Partial Content" },
		{ 300, "Multiple Choices" }, { 301, "Moved Permanently" },
		{ 302, "Found" }, { 303, "See Other" },
		{ 304, "Not Modified" }, { 307, "Temporary Redirect" },
		{ 308, "Permanent Redirect" },
		{ 400, "Bad Request" }, { 401, "Unauthorized" },
		{ 402, "Payment Required" }, { 403, "Forbidden" },
		{ 404, "Not Found" }, { 405, "Method Not Allowed" },
		{ 406, "Not Acceptable" },
		{ 407, "Proxy Authentication Required" },
		{ 408, "Request Timeout" }, { 409, "Conflict" },
		{ 410, "Gone" }, { 411, "Length Required" },
		{ 412, "Precondition Failed" }, { 413, "Content Too Large" },
		{ 414, "URI Too Long" }, { 415, "Unsupported Media Type" },
		{ 416, "Range Not Satisfiable" },
		{ 417, "Expectation Failed" }, { 421, "Misdirected Request" },
		{ 422, "Unprocessable Content" }, { 423, "Locked" },
		{ 424, "Failed Dependency" }, { 425, "Too Early" },
		{ 426, "Upgrade Required" }, { 428, "Precondition Required" },
		{ 429, "Too Many Requests" },
		{ 431, "Request Header Fields Too Large" },
		{ 451, "Unavailable For Legal Reasons" },
		{ 500, "Internal Server Error" }, { 501, "Not Implemented" },
		{ 502, "Bad Gateway" }, { 503, "Service Unavailable" },
		{ 504, "Gateway Timeout" },
		{ 505, "HTTP Version Not Supported" },
		{ 507, "Insufficient Storage" },
		{ 511, "Network Authentication Required" },
	};

	for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++)
		if (phrases[i].status == status)
			return phrases[i].phrase;
	return "";
}

void
http_status_reason(char *out, size_t size, long status, const char *phrase,
    const char *body, size_t bodylen)
{
	FILE *f;

	if (size < 2) {
		if (size == 1)
			out[0] = '\0';
		return;
	}
	out[0] = out[size - 1] = '\0';
	/* What fits is kept, and terminated. */
	if ((f = fmemopen(out, size, "w")) == NULL)
		return;
	setvbuf(f, NULL, _IONBF, 0);
	if (phrase == NULL || phrase[0] == '\0')
		phrase = http_phrase(status);
	fprintf(f, "HTTP %ld", status);
	if (phrase[0] != '\0') {
		fputc(' ', f);
		escape_text(f, phrase, strlen(phrase));
	}
	if (bodylen > 0) {
		fputs(": ", f);
		escape_text(f, body, bodylen > HTTP_BODY_IN_REASON ?
		    HTTP_BODY_IN_REASON : bodylen);
	}
	fclose(f);
	out[size - 1] = '\0';
}
