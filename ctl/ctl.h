/*
 * ctl: what the commands of taskworkerctl share: the config, the Redis
 * connection, the queue and ids they act on, and text or JSON output.
 */
#ifndef TASKWORKERCTL_CTL_H
#define TASKWORKERCTL_CTL_H

#include <stdio.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "escape.h"
#include "log.h"
#include "qkeys.h"

#define EXIT_FAIL	1	/* an id named was not found, or an error */
#define EXIT_USAGE	64
#define EXIT_UNAVAILABLE 69	/* Redis cannot be reached or refused us */
#define EXIT_CONFIG	78

struct ctl {
	const struct config *cfg;
	redisContext *rc;
	char host[256];		/* the server connected to (TCP) */
	int port;
	int json;
	const char *queue;
	long limit;		/* list commands: most ids shown, 0 all */
	int all;		/* --all */
	char **ids;		/* the IDs of the command line */
	int nids;
	int status;		/* exit status so far: 0, EXIT_FAIL or 69 */
	int whole;		/* --json: the command printed its whole object */
};

/* ctlredis.c */
void ctl_errx(const char *fmt, ...) PRINTFLIKE(1, 2);
/* The last message ctl_errx printed, without "taskworkerctl: ", or "". */
const char *ctl_last_error(void);
/* MS milliseconds as a timeval, for hiredis' timeouts. */
struct timeval ctl_ms_tv(int ms);
/*
 * Connects, AUTHs and SELECTs as the daemon does (to the master the
 * sentinels name, with redis.sentinels); 0 or an exit status.
 */
int ctl_connect(struct ctl *c);
void ctl_disconnect(struct ctl *c);
/*
 * One command. Returns its reply (freeReplyObject it), or NULL after a
 * message on stderr, with c->status set: 69 when the connection failed,
 * EXIT_FAIL for an error reply.
 */
redisReply *ctl_command(struct ctl *c, int argc, const char **argv,
    const size_t *lens);
/* EVAL of SCRIPT on NKEYS KEYS and NARGS ARGS (LENS may be NULL). */
redisReply *ctl_eval(struct ctl *c, const char *script, int nkeys,
    const char **keys, int nargs, const char **args, const size_t *lens);
/* The server's clock in ms since the epoch (as the daemons use it); -1. */
long long ctl_now_ms(struct ctl *c);

/* ctlsentinel.c */
/*
 * Asks cfg->redis.sentinels in turn where cfg->redis.sentinel_master is:
 * 0 with its address in HOST (SIZE bytes) and *PORT, or 69 after a
 * message naming each sentinel and why it did not answer.
 */
int ctl_sentinel_master(const struct config *cfg, char *host, size_t size,
    int *port);

/* out.c */
/* MS since the epoch as local "YYYY-MM-DD HH:MM:SS". */
void out_localtime(char *buf, size_t size, long long ms);
/* A duration for people: "3s", "2m05s", "4h10m", "2d03h". */
void out_duration(char *buf, size_t size, long long ms);
/* When a due time is, against NOW: "in 3s" or "overdue by 2s". */
void out_due(char *buf, size_t size, long long due, long long now);

/* commands.c */
int cmd_status(struct ctl *c, char **queues, int nqueues);
int cmd_dead_list(struct ctl *c);
int cmd_dead_requeue(struct ctl *c);
int cmd_dead_purge(struct ctl *c);
int cmd_retry_list(struct ctl *c);
int cmd_scheduled_list(struct ctl *c);
int cmd_retry_now(struct ctl *c);
int cmd_pause(struct ctl *c);
int cmd_resume(struct ctl *c);

#endif
