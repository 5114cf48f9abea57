/*
 * dsn: build delivery status notifications (RFC 3464, RFC 3461 §6, RFC 6522
 * multipart/report) as message text. Pure: no I/O, no clock (the caller
 * passes the time), no queue. relayd/bounce.c queues what this builds.
 */
#ifndef RELAYD_DSN_H
#define RELAYD_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* DSN_RELAYED: RFC 3461 §5.2.2, a recipient that asked for NOTIFY=SUCCESS
 * was handed to a next hop that does not offer DSN, so no "delivered"
 * report can follow; Action: relayed, status 2.x.x, headers only. */
enum dsn_kind { DSN_FAILURE = 0, DSN_DELAY, DSN_RELAYED };

struct dsn_rcpt {
    const char *address;    /* final recipient, "u@example.org" */
    const char *orcpt;      /* ORCPT as given ("rfc822;u@example.org") or NULL */
    const char *status;     /* "5.1.1", "4.4.7" */
    const char *remote_mta; /* host name that answered, or NULL */
    const char *diagnostic; /* the reply, e.g. "550 5.1.1 no such user", or NULL */
    int64_t last_attempt;   /* unix time or 0 */
};

struct dsn_info {
    enum dsn_kind kind;
    const char *reporting_mta; /* our hostname */
    const char *queue_id;      /* of the original message */
    const char *envid;         /* ENVID (xtext) or NULL */
    const char *sender;        /* original envelope sender: the DSN's recipient */
    int64_t arrival;           /* of the original */
    int64_t now;
    int64_t retry_until;  /* DSN_DELAY: Will-Retry-Until */
    int return_full;      /* include the whole original (RET=FULL or unset) or headers */
    const char *original; /* the original message as stored */
    size_t original_len;
    size_t max_original; /* return at most this much of it (then headers only,
                          * and part 1 says so): bounce_size_limit */
};

/* Append the whole DSN message (header fields From:, To:, Subject:, Date:,
 * Message-ID:, Auto-Submitted: auto-replied, MIME parts: human text,
 * message/delivery-status, message/rfc822 or text/rfc822-headers) with CRLF
 * line ends to out. 0 or < 0 (buf errors). */
int dsn_build(const struct dsn_info *info, const struct dsn_rcpt *rcpts, size_t n, struct buf *out);

/* "5.1.1" from a reply's enhanced code, or a class default from the code
 * ("5.0.0", "4.0.0"); out must hold 16 bytes. */
void dsn_status_from_reply(int code, const char *enh, char *out);

/* Whether a recipient with these NOTIFY bits (SMTP_NOTIFY_*, 0 when the
 * client gave none) gets a notification of this kind. RFC 3461 §4.1:
 * NEVER asks for nothing; a NOTIFY list asks only for what it names; none
 * means FAILURE and DELAY (the RFC leaves the default to the MTA);
 * DSN_RELAYED only when SUCCESS is named. */
int dsn_notify_wants(unsigned notify, enum dsn_kind kind);

#endif
