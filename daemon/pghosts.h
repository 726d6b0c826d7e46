/*
 * pghosts: the hosts of a libpq conninfo, so that their names can be
 * resolved off the loop and handed back to libpq as hostaddr, with host
 * kept for TLS name checks.
 */
#ifndef TASKWORKERD_PGHOSTS_H
#define TASKWORKERD_PGHOSTS_H

#include <stddef.h>

#define PGHOSTS_MAX	8

enum pghost_kind { PGHOST_NAME, PGHOST_NUMERIC, PGHOST_UNIX };

struct pghosts {
	int n;				/* hosts; 0: libpq's default */
	int fixed;			/* hostaddr given: nothing to resolve */
	char *host[PGHOSTS_MAX];
	char *port[PGHOSTS_MAX];	/* NULL: libpq's default */
	enum pghost_kind kind[PGHOSTS_MAX];
};

/* Reads the hosts of CONNINFO; -1 (ERR filled) when libpq cannot parse it. */
int pghosts_parse(const char *conninfo, struct pghosts *h, char *err,
    size_t len);
void pghosts_clear(struct pghosts *h);
/*
 * The hosts to resolve, in order (NAMES[i] lives with H): none when the
 * only host is a number or a socket directory, else every one that is not
 * a socket directory.
 */
int pghosts_names(const struct pghosts *h, const char **names);
/*
 * What libpq is given beside the conninfo: HOST, HOSTADDR and PORT lists
 * (malloc'ed; free them) holding every host that has an address. ADDRS
 * follows pghosts_names: ADDRS[i] an address of its host i, or NULL. The
 * list begins at host START (modulo their number), so that a host that
 * swallows packets until the connect timeout does not come first at every
 * try and hide the others. 0 when
 * there is nothing to override, -1 when no host has an address or out
 * of memory.
 */
int pghosts_params(const struct pghosts *h, const char *const *addrs,
    int naddrs, unsigned start, char **host, char **hostaddr, char **port);

#endif
