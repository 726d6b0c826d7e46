/*
 * pghosts: a conninfo's hosts, resolved by the daemon and handed back to
 * libpq as hostaddr (libpq's own lookup would block the loop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pghosts.h"
#include "resolve.h"

/* Splits a comma list into OUT (strdup'ed); how many, -1 out of memory. */
static int
split(const char *list, char **out, int max)
{
	int n = 0;
	const char *p = list;

	for (;;) {
		size_t len = strcspn(p, ",");

		if (n == max)
			return n;
		if ((out[n] = strndup(p, len)) == NULL)
			return -1;
		n++;
		if (p[len] == '\0')
			return n;
		p += len + 1;
	}
}

void
pghosts_clear(struct pghosts *h)
{
	for (int i = 0; i < PGHOSTS_MAX; i++) {
		free(h->host[i]);
		free(h->port[i]);
	}
	memset(h, 0, sizeof(*h));
}

int
pghosts_parse(const char *conninfo, struct pghosts *h, char *err, size_t len)
{
	PQconninfoOption *opts, *o;
	char *errmsg = NULL;
	const char *host = NULL, *port = NULL;
	int nport = 0, ok = 1;

	memset(h, 0, sizeof(*h));
	if ((opts = PQconninfoParse(conninfo, &errmsg)) == NULL) {
		snprintf(err, len, "%s", errmsg ? errmsg : "out of memory");
		PQfreemem(errmsg);
		return -1;
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			h->fixed = 1;
	}
	if (host != NULL && (h->n = split(host, h->host, PGHOSTS_MAX)) < 0)
		ok = 0;
	if (ok && port != NULL && (nport = split(port, h->port,
	    PGHOSTS_MAX)) < 0)
		ok = 0;
	/* One port serves every host. */
	for (int i = 1; ok && nport == 1 && i < h->n; i++)
		if ((h->port[i] = strdup(h->port[0])) == NULL)
			ok = 0;
	PQconninfoFree(opts);
	if (!ok) {
		pghosts_clear(h);
		snprintf(err, len, "out of memory");
		return -1;
	}
	for (int i = 0; i < h->n; i++)
		h->kind[i] = h->host[i][0] == '/' || h->host[i][0] == '@' ||
		    h->host[i][0] == '\0' ? PGHOST_UNIX :
		    resolve_is_numeric(h->host[i]) ? PGHOST_NUMERIC :
		    PGHOST_NAME;
	return 0;
}

int
pghosts_names(const struct pghosts *h, const char **names)
{
	int n = 0, named = 0;

	if (h->fixed)
		return 0;
	for (int i = 0; i < h->n; i++)
		named += h->kind[i] == PGHOST_NAME;
	/*
	 * Numeric hosts too, beside a name or another host: their "lookup"
	 * costs nothing, and a list is then handed over in turn.
	 */
	for (int i = 0; (named > 0 || h->n > 1) && i < h->n; i++)
		if (h->kind[i] != PGHOST_UNIX)
			names[n++] = h->host[i];
	return n;
}

/* Appends ",S" (or S first) to *LIST; -1 out of memory. */
static int
append(char **list, const char *s)
{
	size_t old = *list ? strlen(*list) : 0;
	char *p = realloc(*list, old + strlen(s) + 2);

	if (p == NULL)
		return -1;
	if (*list == NULL)
		p[0] = '\0';
	else
		strcat(p, ",");
	strcat(p, s);
	*list = p;
	return 0;
}

int
pghosts_params(const struct pghosts *h, const char *const *addrs, int naddrs,
    unsigned start, char **host, char **hostaddr, char **port)
{
	int name = 0, kept = 0, ok = 1, ports = 0, at[PGHOSTS_MAX];

	*host = *hostaddr = *port = NULL;
	if (h->fixed || naddrs == 0 || h->n == 0)
		return 0;
	for (int i = 0; i < h->n; i++)	/* host i's entry in ADDRS, or -1 */
		at[i] = h->kind[i] != PGHOST_UNIX ? name++ : -1;
	for (int k = 0; ok && k < h->n; k++) {
		int i = (int)((start + (unsigned)k) % (unsigned)h->n);
		const char *addr = "";

		if (at[i] >= 0) {
			addr = at[i] < naddrs ? addrs[at[i]] : NULL;
			if (addr == NULL)
				continue;	/* no address: left out */
		}
		ports += h->port[i] != NULL;
		ok = append(host, h->host[i]) == 0 &&
		    append(hostaddr, addr) == 0 &&
		    append(port, h->port[i] ? h->port[i] : "") == 0;
		kept++;
	}
	if (!ok || kept == 0) {
		free(*host);
		free(*hostaddr);
		free(*port);
		*host = *hostaddr = *port = NULL;
		return -1;
	}
	if (ports == 0) {	/* libpq's default for all */
		free(*port);
		*port = NULL;
	}
	return 1;
}
