/*
 * httpc: one request per task through libcurl's multi interface. libcurl
 * names the sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call
 * it back (CURLMOPT_TIMERFUNCTION); ev_io and ev_timer watchers do the
 * waiting, so the loop never blocks. At most max_connections requests
 * (times the streams of a multiplexed connection, once the server speaks
 * HTTP/2) are handed to libcurl; the rest wait here, in order, so no
 * request's timeout runs while it waits for a connection.
 *
 * libcurl 7.88 walks every connection of a multi handle when a transfer
 * is removed, and every connection to the host when one starts. So that
 * this cost does not grow with the requests in flight, the connections
 * are split among shards of HTTP_SHARD_CONNS, each a multi handle.
 *
 * A plain http:// URL is sent by h1conn instead, over HTTP/1.1 (the whole
 * request one buffer written at once, the answer read in one recv() as a
 * rule, where libcurl 7.88 makes four system calls and some 40 us of work
 * of each request) or, with handler.http2, HTTP/2 by prior knowledge,
 * which libcurl 7.88 cannot reuse (curl issue 10634). The waiting, the
 * answers and the bound are the same for both.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "escape.h"
#include "h1conn.h"
#include "httpc.h"
#include "httpreq.h"
#include "log.h"
#include "taskid.h"
#include "wbuf.h"

#define HTTP_STREAMS		100	/* per multiplexed connection */
#define HTTP_RECV_BUFFER	1024	/* libcurl's read buffer per request */
#define HTTP_PHRASE_MAX		100
#define HTTP_SHARD_CONNS	256	/* connections per multi handle */

struct http_conf {
	int refs;
	char *url;
	char *method;			/* NULL for POST */
	char *host;			/* of the URL, for reasons */
	long port;
	long version;			/* CURLOPT_HTTP_VERSION */
	struct curl_slist *headers;	/* shared by every request */
	char *ca_file;			/* NULL: the system's */
	long timeout_ms;
	long connect_timeout_ms;
	long max_response_bytes;
	/* Plain http:// through h1conn: */
	int own;
	int h2c;			/* over HTTP/2, prior knowledge */
	char *h1host;			/* the host, without brackets */
	char *h1head;			/* HTTP/1.1: the request up to its own
					   headers */
	size_t h1headlen;
	nghttp2_nv *h2nv;		/* h2c: the fields every request has */
	size_t h2nnv;
	char *h2text;			/* their names and values */
	size_t h2textlen;
};

/* Requests in one state, in order. */
struct rlist {
	struct http_run *head, *tail;
	int n;
};

/* A multi handle and its share of the connections. */
struct http_shard {
	struct http_pool *p;
	CURLM *multi;
	ev_timer timer;			/* libcurl's timeout */
	int max;			/* its connections; 0 after a reload
					   lowered max_connections */
	int running;
	int roomy;			/* on the pool's list of shards with room */
	struct http_shard *prev, *next;
};

struct http_pool {
	struct ev_loop *loop;
	ev_timer kick;			/* stopped answers, and room */
	int max_connections;
	int mux;			/* the last answer came over HTTP/2 */
	struct http_shard **shards;	/* as many as max_connections ever
					   needed */
	int nshards;
	struct http_shard *roomy;	/* shards that may take a request */
	struct rlist waiting;		/* for room, in order */
	struct rlist running;		/* handed to libcurl */
	struct rlist soon;		/* stopped: answered next turn */
	struct h1_pool *h1;		/* plain http:// connections */
	struct wbuf body;		/* where bodies are written, in turn */
	int curl_running;		/* requests handed to libcurl */
};

/* One socket libcurl asked to watch. */
struct http_sock {
	ev_io io;
	struct http_shard *sh;
};

enum run_state { R_WAITING, R_RUNNING, R_STOPPED };

struct http_run {
	struct http_pool *p;
	struct http_shard *sh;		/* while running */
	struct http_conf *conf;
	enum run_state state;
	http_done_fn *fn;		/* NULL once cancelled */
	void *arg;
	struct http_run *prev, *next;	/* in the list of its state */
	char *body;
	size_t bodylen;
	struct curl_slist key;		/* Idempotency-Key, then the conf's */
	CURL *easy;
	char *req;			/* own: the whole request; BODY in it */
	size_t reqlen;
	nghttp2_nv h2own[2];		/* h2c: Idempotency-Key, Content-Length */
	char clen[24];
	struct h1_req *h1;		/* own, while running */
	size_t got;			/* bytes of the answer's body */
	int cut;			/* longer than max_response_bytes */
	size_t headlen;
	char head[HTTP_BODY_IN_REASON];	/* the body's first bytes */
	char phrase[HTTP_PHRASE_MAX + 1];
	char retry_after[64];
	const char *why;		/* of a stopped request */
	char errbuf[CURL_ERROR_SIZE];
};

static void admit(struct http_pool *p);

/* ---- settings ----------------------------------------------------------- */

void
http_conf_unref(struct http_conf *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	if (c->headers) {
		/* The token is in here: wiped before it is freed. */
		for (struct curl_slist *h = c->headers; h; h = h->next)
			explicit_bzero(h->data, strlen(h->data));
		curl_slist_free_all(c->headers);
	}
	if (c->h1head)
		explicit_bzero(c->h1head, c->h1headlen);
	if (c->h2text)
		explicit_bzero(c->h2text, c->h2textlen);
	free(c->h1head);
	free(c->h2text);
	free(c->h2nv);
	free(c->h1host);
	free(c->url);
	free(c->method);
	free(c->host);
	free(c->ca_file);
	free(c);
}

/* Whether one of HEADERS is NAME. */
static int
has_header(const struct curl_slist *headers, const char *name)
{
	size_t n = strlen(name);

	for (const struct curl_slist *h = headers; h; h = h->next)
		if (strncasecmp(h->data, name, n) == 0 && h->data[n] == ':')
			return 1;
	return 0;
}

/*
 * One field of the h2c requests: its offsets in F's text, to be mended.
 * The blanks around a value go (HTTP/2 holds a field with them malformed).
 */
static void
h2_field(struct http_conf *c, FILE *f, const char *name, size_t namelen,
    const char *value)
{
	nghttp2_nv *nv = &c->h2nv[c->h2nnv++];
	long at = ftell(f);
	size_t len;

	value += strspn(value, " \t");
	len = strlen(value);
	while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;

	nv->name = (uint8_t *)(uintptr_t)at;
	nv->namelen = namelen;
	for (size_t i = 0; i < namelen; i++)	/* HTTP/2 wants them so */
		fputc(tolower((unsigned char)name[i]), f);
	fputc('\0', f);
	nv->value = (uint8_t *)(uintptr_t)(at + (long)namelen + 1);
	nv->valuelen = len;
	fwrite(value, 1, len, f);
	fputc('\0', f);
	nv->flags = NGHTTP2_NV_FLAG_NONE;
}

/*
 * The fields of every h2c request of C: the pseudo-headers, ours and the
 * shared ones (HEADERS), a Host among them as :authority.
 */
static int
conf_h2(struct http_conf *c, const char *method, const char *host,
    const char *path)
{
	size_t n = 6;
	char port[16], *mine = NULL;
	const char *v, *auth = NULL;
	FILE *f;
	int rc;

	for (struct curl_slist *h = c->headers; h; h = h->next)
		n++;
	if ((c->h2nv = calloc(n, sizeof(*c->h2nv))) == NULL ||
	    (f = open_memstream(&c->h2text, &c->h2textlen)) == NULL)
		return -1;
	port[0] = '\0';
	if (c->port != 80)
		snprintf(port, sizeof(port), ":%ld", c->port);
	h2_field(c, f, ":method", 7, method);
	h2_field(c, f, ":scheme", 7, "http");
	h2_field(c, f, ":path", 5, path);
	for (struct curl_slist *h = c->headers; h; h = h->next)
		if (strncasecmp(h->data, "Host:", 5) == 0)
			auth = h->data + 5;
	if (auth == NULL && asprintf(&mine, "%s%s", host, port) == -1) {
		fclose(f);
		return -1;
	}
	h2_field(c, f, ":authority", 10, auth ? auth : mine);
	free(mine);
	if (!has_header(c->headers, "User-Agent"))
		h2_field(c, f, "user-agent", 10, HTTP_USER_AGENT);
	if (!has_header(c->headers, "Accept"))
		h2_field(c, f, "accept", 6, "*/*");
	for (struct curl_slist *h = c->headers; h; h = h->next) {
		v = strchr(h->data, ':');
		if (v[1] == '\0' || strncasecmp(h->data, "Host:", 5) == 0)
			continue;		/* "Expect:"; the Host is above */
		h2_field(c, f, h->data, (size_t)(v - h->data), v + 1);
	}
	rc = ferror(f);
	if (fclose(f) != 0 || rc || c->h2text == NULL)
		return -1;
	for (size_t i = 0; i < c->h2nnv; i++) {
		c->h2nv[i].name = (uint8_t *)c->h2text +
		    (uintptr_t)c->h2nv[i].name;
		c->h2nv[i].value = (uint8_t *)c->h2text +
		    (uintptr_t)c->h2nv[i].value;
	}
	return 0;
}

/*
 * Host and port of C's URL, for the reasons of failed connects; for a
 * plain http:// one, also the start of every request: its line, Host and
 * the headers of every request, which end with the shared ones (HEADERS);
 * over h2c, their fields.
 */
static int
conf_where(struct http_conf *c, const char *method)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL, *path = NULL, *query = NULL;
	char *target = NULL;
	size_t hl;
	FILE *f;
	int rc = -1;

	if (u == NULL)
		return -1;
	if (curl_url_set(u, CURLUPART_URL, c->url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
	    CURLUE_OK || (c->host = strdup(host)) == NULL)
		goto out;
	c->port = strtol(port, NULL, 10);
	if (!c->own) {
		rc = 0;
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
		query = NULL;
	hl = strlen(host);
	if (hl >= 2 && host[0] == '[')	/* [::1] */
		c->h1host = strndup(host + 1, hl - 2);
	else
		c->h1host = strdup(host);
	if (c->h1host == NULL || asprintf(&target, "%s%s%s", path[0] ? path :
	    "/", query ? "?" : "", query ? query : "") == -1) {
		target = NULL;
		goto out;
	}
	if (c->h2c) {
		rc = conf_h2(c, method, host, target);
		goto out;
	}
	if ((f = open_memstream(&c->h1head, &c->h1headlen)) == NULL)
		goto out;
	fprintf(f, "%s %s HTTP/1.1\r\n", method, target);
	/* As libcurl does, a header of the config replaces ours. */
	if (!has_header(c->headers, "Host")) {
		fprintf(f, "Host: %s", host);
		if (c->port != 80)
			fprintf(f, ":%ld", c->port);
		fputs("\r\n", f);
	}
	if (!has_header(c->headers, "User-Agent"))
		fputs("User-Agent: " HTTP_USER_AGENT "\r\n", f);
	if (!has_header(c->headers, "Accept"))
		fputs("Accept: */*\r\n", f);
	for (struct curl_slist *h = c->headers; h; h = h->next)
		if (strchr(h->data, ':')[1] != '\0')	/* not "Expect:" */
			fprintf(f, "%s\r\n", h->data);
	rc = fclose(f) == 0 && c->h1head != NULL ? 0 : -1;
out:
	free(target);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(query);
	curl_url_cleanup(u);
	return rc;
}

static int
conf_header(struct http_conf *c, const char *fmt, const char *value)
{
	struct curl_slist *h;
	char *line;

	if (asprintf(&line, fmt, value) == -1)
		return -1;
	h = curl_slist_append(c->headers, line);
	explicit_bzero(line, strlen(line));
	free(line);
	if (h == NULL)
		return -1;
	c->headers = h;
	return 0;
}

struct http_conf *
http_conf_new(const struct config *cfg)
{
	const char *url = cfg->handler.url;
	struct http_conf *c = calloc(1, sizeof(*c));
	int ok;

	if (c == NULL)
		return NULL;
	c->refs = 1;
	c->timeout_ms = cfg->handler.timeout_ms;
	c->connect_timeout_ms = cfg->handler.connect_timeout_ms;
	c->max_response_bytes = cfg->handler.max_response_bytes;
	if (strncasecmp(url, "https:", 6) == 0) {
		c->version = CURL_HTTP_VERSION_2TLS;
	} else {
		c->own = 1;		/* by h1conn */
		c->h2c = cfg->handler.http2;
	}
	ok = (c->url = strdup(url)) != NULL &&
	    (strcmp(cfg->handler.method, "POST") == 0 ||
	    (c->method = strdup(cfg->handler.method)) != NULL) &&
	    (cfg->handler.ca_file[0] == '\0' ||
	    (c->ca_file = strdup(cfg->handler.ca_file)) != NULL) &&
	    conf_header(c, "%s", "Content-Type: application/json") == 0 &&
	    /* No "Expect: 100-continue" before a large body. */
	    conf_header(c, "%s", "Expect:") == 0 &&
	    (cfg->handler.token == NULL ||
	    conf_header(c, "Authorization: Bearer %s", cfg->handler.token) ==
	    0);
	for (int i = 0; ok && i < cfg->handler.nheaders; i++)
		ok = conf_header(c, "%s", cfg->handler.headers[i]) == 0;
	ok = ok && conf_where(c, cfg->handler.method) == 0;
	if (!ok) {
		http_conf_unref(c);
		return NULL;
	}
	return c;
}

/* ---- lists -------------------------------------------------------------- */

static void
list_add(struct rlist *l, struct http_run *r)
{
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
	l->n++;
}

static void
list_del(struct rlist *l, struct http_run *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	r->prev = r->next = NULL;
	l->n--;
}

/* The list R is on. */
static struct rlist *
list_of(struct http_run *r)
{
	struct http_pool *p = r->p;

	return r->state == R_WAITING ? &p->waiting : r->state == R_RUNNING ?
	    &p->running : &p->soon;
}

/* R leaves the list of its state for the one of STATE. */
static void
move(struct http_run *r, enum run_state state)
{
	list_del(list_of(r), r);
	r->state = state;
	list_add(list_of(r), r);
}

/* ---- the loop and libcurl ----------------------------------------------- */

/* Hands every finished transfer of SH to finish(). */
static void finish_all(struct http_shard *sh);

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct http_sock *k = w->data;
	struct http_shard *sh = k->sh;
	int flags = 0, still;

	(void)loop;
	if (revents & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (revents & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(sh->multi, w->fd, flags, &still);
	finish_all(sh);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct http_shard *sh = w->data;
	int still;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &still);
	finish_all(sh);
}

/* CURLMOPT_SOCKETFUNCTION: watch S as WHAT says. */
static int
sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct http_shard *sh = userp;
	struct ev_loop *loop = sh->p->loop;
	struct http_sock *k = socketp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (k != NULL) {
			ev_io_stop(loop, &k->io);
			free(k);
			curl_multi_assign(sh->multi, s, NULL);
		}
		return 0;
	}
	if (k == NULL) {
		if ((k = calloc(1, sizeof(*k))) == NULL)
			return -1;	/* libcurl fails the transfer */
		k->sh = sh;
		ev_init(&k->io, io_cb);
		k->io.data = k;
		curl_multi_assign(sh->multi, s, k);
	}
	if (what & CURL_POLL_IN)
		events |= EV_READ;
	if (what & CURL_POLL_OUT)
		events |= EV_WRITE;
	/* A socket may be new under an old number: always start afresh. */
	ev_io_stop(loop, &k->io);
	ev_io_set(&k->io, s, events);
	ev_io_start(loop, &k->io);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: call libcurl back in TIMEOUT_MS (-1: never). */
static int
multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_shard *sh = userp;
	struct ev_loop *loop = sh->p->loop;

	(void)multi;
	ev_timer_stop(loop, &sh->timer);
	if (timeout_ms >= 0) {
		/* Never from inside this call: libcurl forbids it. */
		ev_timer_set(&sh->timer, timeout_ms / 1000.0, 0.);
		ev_timer_start(loop, &sh->timer);
	}
	return 0;
}

/* ---- one request --------------------------------------------------------- */

/* CURLOPT_HEADERFUNCTION: the status line's phrase, and Retry-After. */
static size_t
header_cb(char *buf, size_t size, size_t n, void *arg)
{
	struct http_run *r = arg;
	size_t len = size * n, i, end;

	if (len > 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* A new answer (after a 1xx): "HTTP/1.1 503 Service ..." */
		r->phrase[0] = r->retry_after[0] = '\0';
		for (i = 5; i < len && buf[i] != ' '; i++)
			;
		for (i++; i < len && buf[i] != ' '; i++)
			;
		i++;
		for (end = len; end > i && (buf[end - 1] == '\r' ||
		    buf[end - 1] == '\n' || buf[end - 1] == ' '); end--)
			;
		if (i < end) {
			if (end - i > HTTP_PHRASE_MAX)
				end = i + HTTP_PHRASE_MAX;
			memcpy(r->phrase, buf + i, end - i);
			r->phrase[end - i] = '\0';
		}
	} else if (len > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) {
		for (i = 12; i < len && (buf[i] == ' ' || buf[i] == '\t'); i++)
			;
		end = len - i < sizeof(r->retry_after) - 1 ? len - i :
		    sizeof(r->retry_after) - 1;
		memcpy(r->retry_after, buf + i, end);
		r->retry_after[end] = '\0';
	}
	return len;
}

/* CURLOPT_WRITEFUNCTION: the first bytes are kept; past the limit, cut. */
static size_t
write_cb(char *buf, size_t size, size_t n, void *arg)
{
	struct http_run *r = arg;
	size_t len = size * n, keep;

	if (r->headlen < sizeof(r->head)) {
		keep = sizeof(r->head) - r->headlen;
		if (keep > len)
			keep = len;
		memcpy(r->head + r->headlen, buf, keep);
		r->headlen += keep;
	}
	r->got += len;
	if (r->got > (size_t)r->conf->max_response_bytes) {
		r->cut = 1;
		return len == 0 ? 1 : 0;	/* aborts the transfer */
	}
	return len;
}

static void
run_free(struct http_run *r)
{
	if (r->easy)
		curl_easy_cleanup(r->easy);
	free(r->key.data);
	/* Its start may hold the bearer token, and the rest is a row. */
	if (r->req != NULL)
		explicit_bzero(r->req, r->reqlen);
	free(r->req);
	http_conf_unref(r->conf);
	free(r);
}

/* The easy handle of R, set up to send it. -1 when out of memory. */
static int
run_prepare(struct http_run *r)
{
	struct http_conf *c = r->conf;
	CURL *e = curl_easy_init();

	if (e == NULL)
		return -1;
	r->easy = e;
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* Ending a request does not wait for its resolver thread. */
	curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
	/* No proxy from the environment: it would see the bearer token. */
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_URL, c->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, c->version);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, HTTP_USER_AGENT);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, &r->key);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
	    (curl_off_t)r->bodylen);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
	if (c->method)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
	if (c->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)HTTP_RECV_BUFFER);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	return 0;
}

/* S escaped as text into OUT of SIZE, cut to fit. */
static void
escape_into(char *out, size_t size, const char *s)
{
	FILE *f = fmemopen(out, size, "w");

	out[0] = '\0';
	if (f == NULL)
		return;
	setvbuf(f, NULL, _IONBF, 0);
	escape_text(f, s, strlen(s));
	fclose(f);
	out[size - 1] = '\0';
}

/* Why R's transfer, ended by RC with STATUS (0: no answer), failed. */
static void
run_reason(struct http_run *r, CURLcode rc, long status, char *out,
    size_t size)
{
	struct http_conf *c = r->conf;
	char msg[CURL_ERROR_SIZE * 4];
	char *ip = NULL;
	long port = 0, oserr = 0;
	curl_off_t sent = 0;

	/* libcurl's words may hold the server's (a certificate's name). */
	escape_into(msg, sizeof(msg), r->errbuf[0] ? r->errbuf :
	    curl_easy_strerror(rc));
	curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_IP, &ip);
	curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_PORT, &port);
	curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
	/* Zero until a connection, new or reused, is ready for the request. */
	curl_easy_getinfo(r->easy, CURLINFO_PRETRANSFER_TIME_T, &sent);
	if (ip == NULL || ip[0] == '\0')
		ip = c->host;
	if (port <= 0)
		port = c->port;
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		if (sent == 0 && status == 0)
			snprintf(out, size, "connect to %s%s%s:%ld: timed out "
			    "after %ld ms", strchr(ip, ':') ? "[" : "", ip,
			    strchr(ip, ':') ? "]" : "", port, c->timeout_ms > 0 &&
			    c->timeout_ms < c->connect_timeout_ms ?
			    c->timeout_ms : c->connect_timeout_ms);
		else
			snprintf(out, size, "timed out after %ld ms",
			    c->timeout_ms);
		return;
	case CURLE_COULDNT_CONNECT:
		snprintf(out, size, "connect to %s%s%s:%ld: %s",
		    strchr(ip, ':') ? "[" : "", ip, strchr(ip, ':') ? "]" : "",
		    port, oserr ? strerror((int)oserr) : msg);
		return;
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(out, size, "resolve %s: %s", c->host, msg);
		return;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_USE_SSL_FAILED:
		snprintf(out, size, "TLS: %s", msg);
		return;
	default:
		break;
	}
	/* A status may have come before the rest went wrong: not an answer. */
	snprintf(out, size, "bad response: %s", msg);
}

/* ---- shards ------------------------------------------------------------- */

/* Requests SH may hold at once. */
static int
shard_room(const struct http_shard *sh)
{
	return sh->max * (sh->p->mux ? HTTP_STREAMS : 1);
}

/* SH goes on or off the list of shards with room, as it now has. */
static void
shard_update(struct http_shard *sh)
{
	struct http_pool *p = sh->p;
	int roomy = sh->running < shard_room(sh);

	if (roomy == sh->roomy)
		return;
	if (roomy) {
		sh->prev = NULL;
		sh->next = p->roomy;
		if (p->roomy)
			p->roomy->prev = sh;
		p->roomy = sh;
	} else {
		if (sh->prev)
			sh->prev->next = sh->next;
		else
			p->roomy = sh->next;
		if (sh->next)
			sh->next->prev = sh->prev;
		sh->prev = sh->next = NULL;
	}
	sh->roomy = roomy;
}

/* Whether answers come over HTTP/2 changes the room of every shard. */
static void
set_mux(struct http_pool *p, int mux)
{
	if (p->mux == mux)
		return;
	p->mux = mux;
	for (int i = 0; i < p->nshards; i++)
		shard_update(p->shards[i]);
}

static struct http_shard *
shard_new(struct http_pool *p)
{
	struct http_shard *sh = calloc(1, sizeof(*sh));

	if (sh == NULL)
		return NULL;
	sh->p = p;
	ev_init(&sh->timer, timer_cb);
	sh->timer.data = sh;
	if ((sh->multi = curl_multi_init()) == NULL) {
		free(sh);
		return NULL;
	}
	curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
	curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
	curl_multi_setopt(sh->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	curl_multi_setopt(sh->multi, CURLMOPT_MAX_CONCURRENT_STREAMS,
	    (long)HTTP_STREAMS);
	return sh;
}

static void
shard_set_max(struct http_shard *sh, int max)
{
	long conns = max > 0 ? max : 1;

	sh->max = max;
	curl_multi_setopt(sh->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, conns);
	curl_multi_setopt(sh->multi, CURLMOPT_MAX_HOST_CONNECTIONS, conns);
	/* Idle connections kept for reuse. */
	curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, conns);
	shard_update(sh);
}

/* ---- answers --------------------------------------------------------------- */

/* Takes R's transfer back from libcurl (or h1conn). */
static void
unsend(struct http_run *r)
{
	struct http_shard *sh = r->sh;

	if (r->conf->own) {
		h1_abort(r->h1);
		r->h1 = NULL;
		return;
	}
	curl_multi_remove_handle(sh->multi, r->easy);
	r->sh = NULL;
	sh->running--;
	sh->p->curl_running--;
	shard_update(sh);
}

/*
 * R, off the running list, ended: with the answer A, or with FAILED (no
 * answer, or not one to read); its owner hears what that means.
 */
static void
conclude(struct http_run *r, const struct h1_answer *a, const char *failed)
{
	char reason[1024];
	long long after = -1;
	enum http_result res = HTTPR_FAILED;

	if (a != NULL) {
		switch (http_classify(a->status)) {
		case HTTP_DONE:
			res = HTTPR_DONE;
			break;
		case HTTP_REFUSED:
			res = HTTPR_REFUSED;
			break;
		default:
			if (a->retry_after[0] != '\0')
				after = http_retry_after_ms(a->retry_after,
				    time(NULL));
			break;
		}
		if (res != HTTPR_DONE)
			http_status_reason(reason, sizeof(reason), a->status,
			    a->phrase, a->head, a->headlen);
		failed = reason;
	}
	r->fn(r->arg, res, res == HTTPR_DONE ? NULL : failed, after);
	run_free(r);
}

/* R's transfer ended with RC: its answer, given to the owner. */
static void
finish(struct http_run *r, CURLcode rc)
{
	struct http_pool *p = r->p;
	char reason[1024];
	long status = 0, version = 0;
	struct h1_answer a = {
		.phrase = r->phrase, .retry_after = r->retry_after,
		.head = r->head, .headlen = r->headlen,
	};

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version);
	unsend(r);
	list_del(&p->running, r);
	if (version != 0)
		set_mux(p, version >= CURL_HTTP_VERSION_2_0);
	if ((rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && r->cut)) &&
	    status >= 100) {
		a.status = (int)status;
		conclude(r, &a, NULL);
		return;
	}
	run_reason(r, rc, status, reason, sizeof(reason));
	conclude(r, NULL, reason);
}

/* h1conn's end of R's request. */
static void
h1_done(void *arg, const struct h1_answer *a, const char *reason)
{
	struct http_run *r = arg;
	struct http_pool *p = r->p;

	r->h1 = NULL;
	list_del(&p->running, r);
	if (a != NULL)
		set_mux(p, a->h2);
	conclude(r, a, reason);
	admit(p);
}

static void
finish_all(struct http_shard *sh)
{
	struct http_pool *p = sh->p;
	CURLMsg *m;
	struct http_run *r;
	int left;

	while ((m = curl_multi_info_read(sh->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		r = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (r != NULL)
			finish(r, m->data.result);
	}
	admit(p);
}

/* ---- waiting, and answers for the next turn ---------------------------- */

void
http_pool_forget_mux(struct http_pool *p)
{
	set_mux(p, 0);
}

int
http_pool_room(const struct http_pool *p)
{
	return p->max_connections * (p->mux ? HTTP_STREAMS : 1);
}

static void defer_stopped(struct http_run *r, const char *why);

/*
 * Whether the first of the waiting, R, may be sent now. max_connections
 * bounds the connections of both clients together, which matters while a
 * reload moves between http:// and https://: libcurl's in use are its
 * requests (a hundred to one over HTTP/2), h1conn's are all it has open,
 * and its idle ones close when libcurl wants their room.
 */
static int
has_room(struct http_pool *p, const struct http_run *r)
{
	int per = p->mux ? HTTP_STREAMS : 1;

	if (r->conf->own)
		return h1_pool_room(p->h1, (p->curl_running + per - 1) / per);
	if (p->roomy == NULL)
		return 0;
	if (p->curl_running >= (p->max_connections - h1_pool_open(p->h1)) *
	    per)
		h1_pool_close_idle(p->h1);	/* open now counts no idle */
	return p->curl_running < (p->max_connections -
	    h1_pool_open(p->h1)) * per;
}

/*
 * Hands R to h1conn, or to libcurl through the first shard with room; if
 * it cannot be, R ends next turn.
 */
static void
send_run(struct http_run *r)
{
	struct http_conf *c = r->conf;
	struct http_shard *sh = r->p->roomy;

	if (c->own) {
		struct h1_target t = {
			.host = c->h1host, .port = (int)c->port,
			.timeout_ms = c->timeout_ms,
			.connect_timeout_ms = c->connect_timeout_ms,
			.max_response_bytes = (size_t)c->max_response_bytes,
			.h2 = c->h2c,
		};
		struct h1_msg m = {
			.buf = r->req, .len = r->reqlen,
			.nv = c->h2nv, .nnv = c->h2nnv,
			.own = r->h2own, .nown = 2,
			.body = r->body, .bodylen = r->bodylen,
		};

		if ((r->h1 = h1_send(r->p->h1, &t, &m, h1_done, r)) != NULL) {
			move(r, R_RUNNING);
			return;
		}
	} else if (run_prepare(r) == 0 &&
	    curl_multi_add_handle(sh->multi, r->easy) == CURLM_OK) {
		r->sh = sh;
		sh->running++;
		r->p->curl_running++;
		shard_update(sh);
		move(r, R_RUNNING);
		return;
	}
	/* Not an attempt: the task tries again. */
	defer_stopped(r, "the request could not be set up (out of memory)");
}

/* Sends waiting requests while there is room. */
static void
admit(struct http_pool *p)
{
	struct http_run *r;

	while ((r = p->waiting.head) != NULL && has_room(p, r))
		send_run(r);
}

/* Stopped answers go, and the waiting may go on, on the next turn. */
static void
kick(struct http_pool *p)
{
	if (!ev_is_active(&p->kick)) {
		ev_timer_set(&p->kick, 0., 0.);
		ev_timer_start(p->loop, &p->kick);
	}
}

/* R ends with HTTPR_STOPPED (and WHY) on the next turn. */
static void
defer_stopped(struct http_run *r, const char *why)
{
	struct http_pool *p = r->p;

	r->why = why;
	move(r, R_STOPPED);
	kick(p);
}

static void
kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct http_pool *p = w->data;
	struct rlist now = p->soon;
	struct http_run *r;

	(void)loop;
	(void)revents;
	/* Requests stopped by these answers wait for the next turn. */
	memset(&p->soon, 0, sizeof(p->soon));
	while ((r = now.head) != NULL) {
		list_del(&now, r);
		if (r->fn)
			r->fn(r->arg, HTTPR_STOPPED, r->why, -1);
		run_free(r);
	}
	admit(p);
}

/* ---- the pool ------------------------------------------------------------ */

struct http_pool *
http_pool_new(struct ev_loop *loop, int max_connections)
{
	struct http_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->loop = loop;
	ev_init(&p->kick, kick_cb);
	p->kick.data = p;
	if ((p->h1 = h1_pool_new(loop)) == NULL ||
	    http_pool_set_max(p, max_connections) == -1) {
		http_pool_free(p);
		return NULL;
	}
	return p;
}

int
http_pool_set_max(struct http_pool *p, int max_connections)
{
	int want = (max_connections + HTTP_SHARD_CONNS - 1) / HTTP_SHARD_CONNS;
	struct http_shard **shards, *sh;

	if (want > p->nshards) {
		shards = realloc(p->shards, sizeof(*shards) * (size_t)want);
		if (shards == NULL)
			return -1;
		p->shards = shards;
		for (; p->nshards < want; p->nshards++)
			if ((shards[p->nshards] = shard_new(p)) == NULL)
				return -1;
	}
	p->max_connections = max_connections;
	h1_pool_set_max(p->h1, max_connections);
	/* Shards past the new bound take nothing more. */
	for (int i = 0; i < p->nshards; i++) {
		sh = p->shards[i];
		int left = max_connections - i * HTTP_SHARD_CONNS;

		shard_set_max(sh, left < 0 ? 0 : left > HTTP_SHARD_CONNS ?
		    HTTP_SHARD_CONNS : left);
	}
	kick(p);			/* more room, maybe */
	return 0;
}

/* Frees R, a request of the pool in any state, without an answer. */
static void
drop(struct http_run *r)
{
	if (r->state == R_RUNNING)
		unsend(r);
	list_del(list_of(r), r);
	run_free(r);
}

void
http_pool_free(struct http_pool *p)
{
	struct http_shard *sh;

	if (p == NULL)
		return;
	ev_timer_stop(p->loop, &p->kick);
	while (p->waiting.head)
		drop(p->waiting.head);
	while (p->running.head)
		drop(p->running.head);
	while (p->soon.head)
		drop(p->soon.head);
	h1_pool_free(p->h1);
	for (int i = 0; i < p->nshards; i++) {
		sh = p->shards[i];
		ev_timer_stop(p->loop, &sh->timer);
		/* Closes its connections, letting their sockets go. */
		curl_multi_cleanup(sh->multi);
		free(sh);
	}
	free(p->shards);
	wbuf_free(&p->body);		/* rows may be confidential: wiped */
	free(p);
}

int
http_pool_running(const struct http_pool *p)
{
	return p->running.n;
}

int
http_pool_waiting(const struct http_pool *p)
{
	return p->waiting.n;
}

/* ---- requests ------------------------------------------------------------ */

/*
 * R's request, its BODY of BODYLEN copied in: over HTTP/1.1 by h1conn the
 * whole of it (the conf's start, its Idempotency-Key, Content-Length and
 * the body) in one buffer, else the body alone.
 */
static int
request_text(struct http_run *r, const struct http_conf *c, const char *body,
    size_t bodylen)
{
	size_t keylen = strlen(r->key.data), len = bodylen;
	char clen[48], *at;
	int cl = 0;

	if (c->own && !c->h2c) {
		cl = snprintf(clen, sizeof(clen), "\r\nContent-Length: %zu"
		    "\r\n\r\n", bodylen);
		len += c->h1headlen + keylen + (size_t)cl;
	}
	if ((r->req = malloc(len ? len : 1)) == NULL)
		return -1;
	at = r->req;
	if (cl > 0) {
		at = mempcpy(at, c->h1head, c->h1headlen);
		at = mempcpy(at, r->key.data, keylen);
		at = mempcpy(at, clen, (size_t)cl);
	}
	memcpy(at, body, bodylen);
	r->body = at;
	r->bodylen = bodylen;
	r->reqlen = len;
	return 0;
}

/* R's own h2c fields: its Idempotency-Key and Content-Length. */
static void
h2_own(struct http_run *r)
{
	static const char key[] = "Idempotency-Key: ";

	snprintf(r->clen, sizeof(r->clen), "%zu", r->bodylen);
	/* Not indexed: a value of one request would crowd the others out. */
	r->h2own[0] = (nghttp2_nv){ (uint8_t *)"idempotency-key",
	    (uint8_t *)r->key.data + sizeof(key) - 1, 15,
	    strlen(r->key.data) - (sizeof(key) - 1), NGHTTP2_NV_FLAG_NO_INDEX };
	r->h2own[1] = (nghttp2_nv){ (uint8_t *)"content-length",
	    (uint8_t *)r->clen, 14, strlen(r->clen), NGHTTP2_NV_FLAG_NO_INDEX };
}

/* "Idempotency-Key: QUEUE:ID" for T, a new string; NULL without memory. */
static char *
idempotency_key(const struct run_task *t)
{
	static const char name[] = "Idempotency-Key: ";
	char id[TASKID_TEXT_SIZE], *k, *at;
	size_t ql = strlen(t->queue), il = taskid_format(id, t->id);

	if ((k = malloc(sizeof(name) - 1 + ql + 1 + il + 1)) == NULL)
		return NULL;
	at = mempcpy(k, name, sizeof(name) - 1);
	at = mempcpy(at, t->queue, ql);
	*at++ = ':';
	memcpy(at, id, il + 1);
	return k;
}

struct http_run *
http_start(struct http_pool *p, struct http_conf *conf,
    const struct run_task *t, http_done_fn *fn, void *arg)
{
	struct http_run *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->p = p;
	r->fn = fn;
	r->arg = arg;
	/* The body is written where the last one was, then copied. */
	wbuf_reset(&p->body);
	if (http_body(&p->body, t->id, t->queue, t->attempt, t->ncols,
	    t->names, t->values) == -1 || (r->key.data = idempotency_key(t)) ==
	    NULL)
		goto fail;
	if (request_text(r, conf, p->body.p, p->body.len) == -1)
		goto fail;
	if (conf->h2c)
		h2_own(r);
	/* The shared headers follow this request's own. */
	r->key.next = conf->headers;
	conf->refs++;
	r->conf = conf;
	r->state = R_WAITING;
	list_add(&p->waiting, r);
	if (r == p->waiting.head && has_room(p, r))
		send_run(r);
	return r;
fail:
	free(r->key.data);
	free(r);
	return NULL;
}

void
http_stop(struct http_run *r)
{
	if (r->state == R_STOPPED)
		return;			/* ends on the next turn already */
	if (r->state == R_RUNNING)
		unsend(r);
	defer_stopped(r, "the request was stopped");
}

void
http_cancel(struct http_run *r)
{
	if (r->state == R_STOPPED) {
		r->fn = NULL;		/* freed when its answer would run */
		return;
	}
	if (r->state == R_RUNNING)
		kick(r->p);		/* its room goes to the waiting */
	drop(r);
}
