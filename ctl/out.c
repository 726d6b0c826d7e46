/*
 * out: how taskworkerctl prints what Redis holds: JSON strings that are
 * always valid, text safe for a terminal, times and durations for people.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

void
out_localtime(char *buf, size_t size, long long ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, size, "@%lld", ms);
}

void
out_duration(char *buf, size_t size, long long ms)
{
	long long s = ms / 1000;

	if (ms < 0)
		ms = 0, s = 0;
	if (ms < 10000)
		snprintf(buf, size, "%lld.%llds", s, ms % 1000 / 100);
	else if (s < 60)
		snprintf(buf, size, "%llds", s);
	else if (s < 3600)
		snprintf(buf, size, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, size, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, size, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

void
out_due(char *buf, size_t size, long long due, long long now)
{
	char d[32];

	if (due > now) {
		out_duration(d, sizeof(d), due - now);
		snprintf(buf, size, "in %s", d);
	} else {
		out_duration(d, sizeof(d), now - due);
		snprintf(buf, size, "overdue by %s", d);
	}
}
