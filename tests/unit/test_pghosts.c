/*
 * test_pghosts: a conninfo's hosts are read as libpq reads them, and the
 * addresses found for their names go back as hostaddr, host kept.
 */
#include <stdlib.h>
#include <string.h>

#include "pghosts.h"
#include "tap.h"

static int
same(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static void
check_from(unsigned start, const char *conninfo, const char *const *addrs,
    int naddrs, int want_rv, const char *want_host, const char *want_hostaddr,
    const char *want_port, int want_names);

static void
check(const char *conninfo, const char *const *addrs, int naddrs, int want_rv,
    const char *want_host, const char *want_hostaddr, const char *want_port,
    int want_names)
{
	check_from(0, conninfo, addrs, naddrs, want_rv, want_host,
	    want_hostaddr, want_port, want_names);
}

static void
check_from(unsigned start, const char *conninfo, const char *const *addrs,
    int naddrs, int want_rv,
    const char *want_host, const char *want_hostaddr, const char *want_port,
    int want_names)
{
	struct pghosts h;
	const char *names[PGHOSTS_MAX];
	char err[256], *host, *hostaddr, *port;
	int rv, n;

	if (!ok(pghosts_parse(conninfo, &h, err, sizeof(err)) == 0,
	    "%s: parsed", conninfo)) {
		diag("%s", err);
		return;
	}
	n = pghosts_names(&h, names);
	ok(n == want_names, "%s: %d name(s) to resolve (%d)", conninfo,
	    want_names, n);
	rv = pghosts_params(&h, addrs, naddrs, start, &host, &hostaddr,
	    &port);
	ok(rv == want_rv && same(host, want_host) &&
	    same(hostaddr, want_hostaddr) && same(port, want_port),
	    "%s: %d host=%s hostaddr=%s port=%s", conninfo, rv,
	    host ? host : "(none)", hostaddr ? hostaddr : "(none)",
	    port ? port : "(none)");
	free(host);
	free(hostaddr);
	free(port);
	pghosts_clear(&h);
}

int
main(void)
{
	const char *one[] = { "10.0.0.5" };
	const char *two[] = { "10.0.0.5", "fd00::7" };
	const char *half[] = { NULL, "fd00::7" };
	const char *none[] = { NULL, NULL };
	struct pghosts h;
	char err[256];

	check("dbname=x", NULL, 0, 0, NULL, NULL, NULL, 0);
	check("host=127.0.0.1 port=5433", NULL, 0, 0, NULL, NULL, NULL, 0);
	{
		const char *both[] = { "192.0.2.1", "192.0.2.2" };

		/* A list begins at another host at every try. */
		check_from(1, "host=192.0.2.1,192.0.2.2 port=5432,5433", both,
		    2, 1, "192.0.2.2,192.0.2.1", "192.0.2.2,192.0.2.1",
		    "5433,5432", 2);
		check_from(2, "host=192.0.2.1,192.0.2.2 port=5432,5433", both,
		    2, 1, "192.0.2.1,192.0.2.2", "192.0.2.1,192.0.2.2",
		    "5432,5433", 2);
	}
	check("host=db.test dbname=x", one, 1, 1, "db.test", "10.0.0.5",
	    NULL, 1);
	check("host=db.test port=6000", one, 1, 1, "db.test", "10.0.0.5",
	    "6000", 1);
	check("host=a.test,b.test port=5432,5433 "
	    "target_session_attrs=read-write", two, 2, 1, "a.test,b.test",
	    "10.0.0.5,fd00::7", "5432,5433", 2);
	/* A name without an address is left out, its port with it. */
	check("host=a.test,b.test port=5432,5433", half, 2, 1, "b.test",
	    "fd00::7", "5433", 2);
	check("host=a.test,b.test", none, 2, -1, NULL, NULL, NULL, 2);
	/* Numeric hosts and sockets stay as they are, beside a name. */
	{
		const char *mixed[] = { "127.0.0.1", "10.0.0.5" };

		check("host=/run/postgresql,127.0.0.1,c.test port=5432", mixed,
		    2, 1, "/run/postgresql,127.0.0.1,c.test",
		    ",127.0.0.1,10.0.0.5", "5432,5432,5432", 2);
	}
	/* hostaddr given: the operator chose; nothing is resolved. */
	check("host=db.test hostaddr=192.0.2.1", NULL, 0, 0, NULL, NULL, NULL,
	    0);
	check("postgresql://u@a.test:5000,b.test:5001/db", two, 2, 1,
	    "a.test,b.test", "10.0.0.5,fd00::7", "5000,5001", 2);
	ok(pghosts_parse("host='unterminated", &h, err, sizeof(err)) == -1 &&
	    err[0] != '\0', "a conninfo libpq refuses is refused: %s", err);
	return done_testing();
}
