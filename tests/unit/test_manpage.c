/*
 * test_manpage: doc/taskworkerd.conf.5 against the key table. Every key
 * has exactly one entry ".It Cm SECTION.KEY No = Li DEFAULT" under its
 * section, with the table's default, a type and a "Reload:" sentence;
 * every entry is a key of the table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tap.h"

#define ENTRY		".It Cm "
#define MAX_ENTRIES	256

/* One ".It Cm" entry of the page. */
struct entry {
	char *name;		/* "redis.host" */
	char *section;		/* the .Ss it is under */
	char *def;		/* the default, roff escapes undone; NULL: bad form */
	int line;
	int typed;		/* the text starts with a type */
	int reload;		/* a line starts with "Reload: " */
	int seen;		/* times the table named it */
};

struct page {
	struct entry e[MAX_ENTRIES];
	int n;
	int nkeys;
};

/* The page's text, read whole (it holds no NUL); its path in *PATHP. */
static char *
read_page(char **pathp)
{
	const char *root = getenv("TW_SOURCE_ROOT");
	char *buf = NULL;
	size_t size = 0;
	FILE *fp;

	if (asprintf(pathp, "%s/doc/taskworkerd.conf.5",
	    root != NULL ? root : "../..") == -1)
		abort();
	if ((fp = fopen(*pathp, "r")) == NULL)
		return NULL;
	if (getdelim(&buf, &size, '\0', fp) == -1) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	return buf;
}

/*
 * One mdoc argument as the reader sees it: outer "..." of a quoted
 * argument removed ("" inside is one "), then the roff escapes the page
 * uses undone. Returns NULL for an escape it does not know.
 */
static char *
unroff(const char *s)
{
	static const struct {
		const char *esc, *text;
	} esc[] = {
		{ "\\(dq", "\"" }, { "\\(aq", "'" }, { "\\&", "" },
		{ "\\e", "\\" }, { "\\-", "-" },
	};
	char *out, *o;
	size_t len = strlen(s), i;
	int quoted = 0;

	if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
		quoted = 1;
		s++;
		len -= 2;
	}
	if ((o = out = malloc(len + 1)) == NULL)
		abort();
	while (len > 0) {
		if (quoted && len >= 2 && s[0] == '"' && s[1] == '"') {
			*o++ = '"';
			s += 2;
			len -= 2;
			continue;
		}
		if (*s != '\\') {
			*o++ = *s++;
			len--;
			continue;
		}
		for (i = 0; i < sizeof(esc) / sizeof(esc[0]); i++)
			if (strncmp(s, esc[i].esc, strlen(esc[i].esc)) == 0)
				break;
		if (i == sizeof(esc) / sizeof(esc[0]) ||
		    strlen(esc[i].esc) > len) {
			free(out);
			return NULL;
		}
		strcpy(o, esc[i].text);
		o += strlen(esc[i].text);
		s += strlen(esc[i].esc);
		len -= strlen(esc[i].esc);
	}
	*o = '\0';
	return out;
}

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Collects the entries of TEXT, which it cuts into lines. */
static void
parse(struct page *pg, char *text)
{
	struct entry *cur = NULL;
	char *line, *next, *sp, *section = NULL;
	int lineno = 0, body = 0;

	for (line = text; line != NULL; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (starts(line, ".Ss ") || starts(line, ".Sh ")) {
			section = starts(line, ".Ss ") ? line + 4 : NULL;
			cur = NULL;
			continue;
		}
		if (starts(line, ENTRY)) {
			if (pg->n == MAX_ENTRIES)
				abort();
			cur = &pg->e[pg->n++];
			memset(cur, 0, sizeof(*cur));
			cur->line = lineno;
			cur->section = section != NULL ? section : "";
			cur->name = line + strlen(ENTRY);
			if ((sp = strchr(cur->name, ' ')) != NULL) {
				*sp++ = '\0';
				if (starts(sp, "No = Li "))
					cur->def = unroff(sp + 8);
			}
			body = 0;
			continue;
		}
		if (cur == NULL)
			continue;
		/* The first line of text names the type. */
		if (!body && line[0] != '.' && line[0] != '\0') {
			body = 1;
			cur->typed = starts(line, "String") ||
			    starts(line, "Integer") || starts(line, "List") ||
			    starts(line, "One of");
		}
		if (starts(line, "Reload: "))
			cur->reload = 1;
	}
}

static struct entry *
find(struct page *pg, const char *name)
{
	for (int i = 0; i < pg->n; i++)
		if (strcmp(pg->e[i].name, name) == 0)
			return &pg->e[i];
	return NULL;
}

static void
count_key(void *arg, const char *section, const char *key)
{
	(void)section;
	(void)key;
	(*(int *)arg)++;
}

static void
check_key(void *arg, const char *section, const char *key, const char *def)
{
	struct page *pg = arg;
	struct entry *e;
	char name[256];
	int n = 0;

	pg->nkeys++;
	snprintf(name, sizeof(name), "%s.%s", section, key);
	for (int i = 0; i < pg->n; i++)
		if (strcmp(pg->e[i].name, name) == 0)
			n++;
	e = find(pg, name);
	if (!ok(e != NULL && n == 1, "%s has one entry in the page (%d)", name,
	    n))
		return;
	e->seen++;
	if (!ok(e->def != NULL && strcmp(e->def, def) == 0,
	    "%s: the page's default is the table's, %s", name, def))
		diag("line %d: the page says %s", e->line,
		    e->def != NULL ? e->def : "(no \"No = Li DEFAULT\")");
	if (!ok(strcmp(e->section, section) == 0, "%s: under .Ss %s", name,
	    section))
		diag("line %d: under .Ss %s", e->line, e->section);
	ok(e->typed && e->reload, "%s: gives a type and a Reload: sentence",
	    name);
}

int
main(void)
{
	struct page pg;
	char *path, *text;
	int extra = 0, nkeys = 0;

	memset(&pg, 0, sizeof(pg));
	text = read_page(&path);
	if (!ok(text != NULL, "%s can be read", path)) {
		free(path);
		return done_testing();
	}
	parse(&pg, text);
	config_foreach_default(check_key, &pg);

	for (int i = 0; i < pg.n; i++)
		if (pg.e[i].seen == 0) {
			extra++;
			diag("line %d: %s is not a key of the table",
			    pg.e[i].line, pg.e[i].name);
		}
	ok(extra == 0, "every entry in the page is a key of the table "
	    "(%d not)", extra);
	config_foreach_key(count_key, &nkeys);
	ok(nkeys == pg.nkeys, "config_foreach_key and config_foreach_default "
	    "walk the same %d keys (%d)", pg.nkeys, nkeys);
	ok(pg.nkeys > 0 && pg.n == pg.nkeys, "the page has %d entries for "
	    "%d keys", pg.n, pg.nkeys);

	for (int i = 0; i < pg.n; i++)
		free(pg.e[i].def);
	free(text);
	free(path);
	return done_testing();
}
