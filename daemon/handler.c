/*
 * handler: what runs after the delay. Only "none" exists so far: the
 * timed delay itself is the task's work.
 */
#include "handler.h"
#include "log.h"

int
handler_run(const struct config *cfg, int64_t id, const struct pgrow *row)
{
	(void)row;
	switch (cfg->handler.type) {
	case HANDLER_NONE:
		log_debug("task %lld: handler none", (long long)id);
		return 0;
	}
	log_errorx("task %lld: unknown handler type %d", (long long)id,
	    (int)cfg->handler.type);
	return -1;
}
