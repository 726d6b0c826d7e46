/*
 * httpreq: what the http handler says and how it reads the answer, with
 * no I/O: the checks of its settings, the JSON body of a task, the class
 * of a status, Retry-After, and the reason a failed request leaves.
 */
#ifndef TASKWORKERD_HTTPREQ_H
#define TASKWORKERD_HTTPREQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define HTTP_DEFAULT_TIMEOUT_MS	30000
#define HTTP_BODY_IN_REASON	200	/* bytes of an answer's body kept */
#define HTTP_RETRY_AFTER_MAX_MS	(24 * 3600 * 1000)
/* Where it is used, TASKWORKERD_VERSION is defined (meson's config). */
#define HTTP_USER_AGENT		"taskworkerd/" TASKWORKERD_VERSION

/* Config checks (config.c's check_fn): NULL when fine, else why in BUF. */
const char *http_check_url(const char *url, char *buf, size_t size);
const char *http_check_method(const char *method, char *buf, size_t size);
const char *http_check_header(const char *header, char *buf, size_t size);

struct wbuf;

/*
 * The body of a task: {"id":"42","queue":"tasks","attempt":1,"row":{...}}
 * with every column a JSON string, NULL (a NULL value) as null, added to
 * B. -1 when B failed (out of memory).
 */
int http_body(struct wbuf *b, int64_t id, const char *queue, int attempt,
    int ncols, const char *const *names, const char *const *values);

enum http_class {
	HTTP_DONE,	/* 2xx */
	HTTP_AGAIN,	/* 408, 425, 429, 5xx and whatever is not a 4xx */
	HTTP_REFUSED,	/* any other 4xx: the request itself is wrong */
};

enum http_class http_classify(long status);

/*
 * A Retry-After value (delta seconds or an HTTP date, read against NOW)
 * in ms, at most HTTP_RETRY_AFTER_MAX_MS; -1 when it says nothing usable.
 */
long long http_retry_after_ms(const char *value, time_t now);

/* The standard phrase of STATUS, or "" for one it does not know. */
const char *http_phrase(long status);

/*
 * "HTTP 503 Service Unavailable: <body>" into OUT of SIZE: PHRASE is the
 * server's own (HTTP/1), else the standard one; at most
 * HTTP_BODY_IN_REASON bytes of BODY, escaped; no ": " when it is empty.
 */
void http_status_reason(char *out, size_t size, long status,
    const char *phrase, const char *body, size_t bodylen);

#endif
