/*
 * handler: the work a task does once its delay has passed.
 * "none" does nothing: the delay is the work.
 */
#ifndef TASKWORKERD_HANDLER_H
#define TASKWORKERD_HANDLER_H

#include <stdint.h>

#include "config.h"

struct pgrow;

/* Runs the configured handler on a loaded row; 0 on success, -1 on failure. */
int handler_run(const struct config *cfg, int64_t id, const struct pgrow *row);

#endif
