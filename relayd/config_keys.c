/*
 * config_keys: every key of relayd.conf(5), one table per scope: name, type,
 * default, where it is stored, range and a one-line description. The parser
 * (config.c), relayd -n and the man page follow these tables. Only data
 * here: how a type is parsed is config_value.c's.
 */
#include <stddef.h>

#include "config_int.h"

#define G(f) offsetof(struct config, f)
#define D(f) offsetof(struct cfg_domain, f)
#define Q(f) offsetof(struct cfg_queue, f)

const struct cfg_key config_global_keys[] = {
    {"hostname", T_HOSTNAME, NULL, G(hostname), 0, 0, 0, F_DEF_HOSTNAME,
     "our name in the greeting, the EHLO reply and Received: fields"},
    {"listen", T_LISTEN, "*:25", G(listen), G(nlisten), 0, 0, 0,
     "where to accept SMTP: addr:port, [ipv6]:port or *:port, comma separated"},
    {"database", T_PATH, LOCALSTATEDIR "/lib/relayd/queue.db", G(database), 0, 0, 0, 0,
     "the SQLite queue file"},
    /* The body is one SQLite blob (limit about 1e9 bytes), so stay well under. */
    {"max_message_size", T_SIZE, "10M", G(max_message_size), 0, KIB, 512 * MIB, 0,
     "largest message accepted, in bytes (SIZE in the EHLO reply)"},
    {"max_connections", T_UINT, "200", G(max_connections), 0, 1, 100000, 0,
     "SMTP sessions open at once"},
    {"max_connections_per_ip", T_UINT, "50", G(max_connections_per_ip), 0, 1, 100000, 0,
     "SMTP sessions open at once from one client address"},
    /* RFC 6177: a site or line gets a /64 (or more), so counting IPv6 clients
     * address by address lets one of them take every slot. */
    {"ipv6_prefix_length", T_UINT, "64", G(ipv6_prefix_length), 0, 16, 128, 0,
     "IPv6 clients count per network of this many bits for per-address limits"},
    /* RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients. */
    {"max_recipients", T_UINT, "1000", G(max_recipients), 0, 100, 1000000, 0,
     "recipients accepted per message"},
    {"max_errors", T_UINT, "10", G(max_errors), 0, 1, 1000, 0,
     "protocol errors in a session before it is closed with 421"},
    /* RFC 5321 §4.5.3.2.7: the server timeout should be at least 5 minutes. */
    {"command_timeout", T_DURATION, "5m", G(command_timeout), 0, MS_SECOND, MS_DAY, 0,
     "how long a client may take to send one whole command line"},
    {"data_timeout", T_DURATION, "10m", G(data_timeout), 0, MS_SECOND, MS_DAY, 0,
     "how long DATA may take before min_data_rate extends it; most idle time in DATA"},
    /* Postfix's smtpd_min_data_rate: a trickle must not hold a slot for ever. */
    {"min_data_rate", T_UINT, "500", G(min_data_rate), 0, 0, 1000000000, 0,
     "bytes per second of message data that extend the DATA deadline; 0: no minimum"},
    {"session_timeout", T_DURATION, "1h", G(session_timeout), 0, MS_SECOND, 7 * MS_DAY, 0,
     "how long one inbound SMTP session may last, whatever it does"},
    {"shutdown_timeout", T_DURATION, "30s", G(shutdown_timeout), 0, 0, MS_HOUR, 0,
     "how long sessions in DATA may take to finish on SIGTERM"},
    /* RFC 5321 §6.3: a loop threshold of at least 100 Received: fields. */
    {"hopcount_limit", T_UINT, "100", G(hopcount_limit), 0, 1, 1000, 0,
     "Received: header fields a message may carry"},
    {"tls_cert", T_PATH, NULL, G(tls_cert), 0, 0, 0, F_OPTIONAL | F_READ,
     "PEM certificate chain for STARTTLS; empty: no STARTTLS"},
    {"tls_key", T_PATH, NULL, G(tls_key), 0, 0, 0, F_OPTIONAL | F_READ,
     "PEM private key for tls_cert"},
    {"user", T_USER, NULL, G(user), 0, 0, 0, F_OPTIONAL,
     "drop root privileges to this user after binding; empty: stay as started"},
    {"log_level", T_LOGLEVEL, "info", G(log_level), 0, 0, 0, 0,
     "least severe log lines written: error, warn, info or debug"},
    /* ---- delivery, resolver and ETRN (issue 3) ---- */
    {"dns_servers", T_SERVERS, NULL, G(dns_servers), 0, 0, 0, F_OPTIONAL,
     "resolvers to ask, addr[:port] or [ipv6]:port; empty: those in /etc/resolv.conf"},
    {"my_addresses", T_ADDRS, "", G(my_addresses), G(nmy_addresses), 0, 0, 0,
     "our own addresses: MX hosts with one of them are this relay (self-pruning)"},
    {"delivery_port", T_UINT, "25", G(delivery_port), 0, 1, 65535, 0,
     "port to deliver to for route = mx and for routes without a port"},
    {"max_site_connections", T_UINT, "2", G(max_site_connections), 0, 1, 1000, 0,
     "delivery connections open at once to one site"},
    /* As Postfix's smtp_mx_address_limit: a sender's domain must not make
     * relayd try hundreds of addresses (20 MX x 20 A) in one run. */
    {"max_mx_addresses", T_UINT, "5", G(max_mx_addresses), 0, 1, 100, 0,
     "addresses (of all MX hosts together) tried per delivery run"},
    {"min_backoff", T_DURATION, "5m", G(min_backoff), 0, 100, MS_DAY, 0,
     "wait after the first failed attempt to reach a site"},
    {"max_backoff", T_DURATION, "4h", G(max_backoff), 0, 100, 30 * MS_DAY, 0,
     "longest wait between attempts to reach a site (at least min_backoff)"},
    {"queue_lifetime", T_DURATION, "5d", G(queue_lifetime), 0, MS_SECOND, 365 * MS_DAY, 0,
     "how long mail may wait before it is returned to the sender"},
    {"delay_warning", T_OFF_DURATION, "off", G(delay_warning), 0, MS_SECOND, 365 * MS_DAY, 0,
     "tell the sender when mail has waited this long; off: never"},
    /* Postfix's bounce_size_limit: a DSN to a forged sender carries no payload. */
    /* at most 1000000: delivery reads a streamed body's head for it in one
     * chunk (STORE_CHUNK_MAX, 1 MiB) */
    {"bounce_size_limit", T_SIZE, "50000", G(bounce_size_limit), 0, KIB, 1000000, 0,
     "a DSN returns the whole message up to this size, else only its header"},
    /* RFC 5321 §4.5.3.2: the client timeouts, initial 220 to final dot. */
    {"connect_timeout", T_DURATION, "30s", G(connect_timeout), 0, 100, MS_HOUR, 0,
     "how long a delivery connection may take to open"},
    {"delivery_timeout", T_DURATION, "5m", G(delivery_timeout), 0, 100, MS_HOUR, 0,
     "how long to wait for the greeting and each reply before DATA ends"},
    {"delivery_data_timeout", T_DURATION, "10m", G(delivery_data_timeout), 0, 100, MS_HOUR, 0,
     "how long to wait for the reply to the end of the message"},
    /* RFC 1985 §8 leaves access to the server; "auth" is relayd's own. */
    {"etrn_access", T_NETS, "any", G(etrn_access), G(netrn_access), 0, 0, 0,
     "who may ETRN: any, or auth and/or addresses and networks; each [domain]'s default"},
    {"etrn_rate", T_RATE, "120/1m", G(etrn_rate), G(etrn_rate_period), 1, 1000000, 0,
     "ETRN commands one client address may give per period: N/duration"},
    /* Bounded state per outside party: the least recently seen goes first. */
    {"etrn_rate_table_size", T_UINT, "10000", G(etrn_rate_table_size), 0, 1, 10000000, 0,
     "client addresses (networks) etrn_rate remembers; the least recently seen goes first"},
    {"site_table_size", T_UINT, "10000", G(site_table_size), 0, 1, 10000000, 0,
     "sites whose delivery state (backoff) is remembered; the least recently used idle one"
     " goes first"},
    {"tls_ca_file", T_PATH, NULL, G(tls_ca_file), 0, 0, 0, F_OPTIONAL | F_READ,
     "PEM CA certificates for tls = verify; empty: the system's store"},
    /* ---- storage (issue 11) ---- */
    {"max_queue_messages", T_UINT, "0", G(max_queue_messages), 0, 0, 1000000000, 0,
     "messages queued for one domain section (with its subdomains) at most; 0: no limit"},
    {"max_queue_bytes", T_SIZE, "0", G(max_queue_bytes), 0, 0, (uint64_t)1 << 50, 0,
     "bytes queued for one domain section (with its subdomains) at most; 0: no limit"},
    {"queue_minfree", T_SIZE, "auto", G(queue_minfree), 0, 0, (uint64_t)1 << 50, F_AUTO,
     "free space kept on the queue's file system; below it MAIL gets 452 4.3.1;"
     " auto: 1.5 x max_message_size + 64M"},
    /* ---- control socket (issue 4) ---- */
    {"control_socket", T_PATH, RUNSTATEDIR "/relayd/control.sock", G(control_socket), 0, 0, 0,
     F_OPTIONAL, "unix socket for etrnctl's operator commands; empty: none"},
    {"control_socket_mode", T_OCTAL, "0660", G(control_socket_mode), 0, 0, 0777, 0,
     "permissions of the control socket (octal): who may connect at all"},
    {"control_socket_group", T_GROUP, NULL, G(control_socket_group), 0, 0, 0, F_OPTIONAL,
     "group of the control socket; empty: the primary group of user"},
    /* ---- SMTP AUTH and accounts (issue 8) ---- */
    {"credentials", T_PATH, NULL, G(credentials_file), 0, 0, 0, F_OPTIONAL | F_READ,
     "accounts for AUTH, ETRN with etrn_access = auth and ATRN: NAME:SECRET:DOMAINS lines"},
    {"smtpd_auth", T_BOOL, "yes", G(smtpd_auth), 0, 0, 0, 0,
     "offer AUTH on the listen addresses (when credentials is set)"},
    /* Postfix's anvil: smtpd_client_auth_rate_limit */
    {"auth_fail_limit", T_RATE, "5/10m", G(auth_fail_limit), G(auth_fail_period), 1, 1000000, 0,
     "failed AUTH attempts one client address may make per period, then 421: N/duration"},
    /* ---- ODMR (issue 8) ---- */
    /* RFC 2645 §3: port 366 (the number: Debian's services file has no name for it). */
    {"odmr_listen", T_LISTEN, "", G(odmr_listen), G(nodmr_listen), 0, 0, F_OPTIONAL,
     "where ODMR customers connect for ATRN, e.g. *:366; empty: no ODMR service"},
    {"odmr_require_tls", T_BOOL, "no", G(odmr_require_tls), 0, 0, 0, 0,
     "ODMR port: refuse AUTH with 530 until STARTTLS (needs tls_cert)"},
    {"notify_command", T_PATH, NULL, G(notify_command), 0, 0, 0, F_OPTIONAL,
     "program run (no shell) when mail starts waiting for a held domain; empty: none"},
    {"notify_interval", T_DURATION, "24h", G(notify_interval), 0, MS_SECOND, 365 * MS_DAY, 0,
     "while mail waits, notify again at most this often"},
};

const struct cfg_key config_domain_keys[] = {
    {"mode", T_MODE, "hold", D(mode), 0, 0, 0, 0,
     "hold: deliver on ETRN, ATRN or flush; retry: also retry on a schedule"},
    {"route", T_ROUTE, "mx", D(route), 0, 0, 0, 0,
     "where mail goes: mx (look up MX records), host[:port], or odmr (ATRN only)"},
    {"subdomains", T_BOOL, "no", D(subdomains), 0, 0, 0, 0,
     "also relay for every subdomain of this domain"},
    {"tls", T_TLS, "may", D(tls), 0, 0, 0, 0,
     "STARTTLS when delivering: none, may, encrypt or verify"},
    {"queue_lifetime", T_DURATION, NULL, D(queue_lifetime), G(queue_lifetime), MS_SECOND,
     365 * MS_DAY, F_INHERIT, "how long mail may wait before it is returned; unset: global"},
    {"delay_warning", T_OFF_DURATION, NULL, D(delay_warning), G(delay_warning), MS_SECOND,
     365 * MS_DAY, F_INHERIT, "tell the sender after this long; off: never; unset: global"},
    {"probe_interval", T_OFF_DURATION, "off", D(probe_interval), 0, MS_SECOND, 30 * MS_DAY, 0,
     "hold mode: also try delivery this often; off: only on ETRN, ATRN or flush"},
    {"max_site_connections", T_UINT, NULL, D(max_site_connections), G(max_site_connections), 1,
     1000, F_INHERIT, "delivery connections open at once to this site; unset: global"},
    {"max_queue_messages", T_UINT, NULL, D(max_queue_messages), G(max_queue_messages), 0,
     1000000000, F_INHERIT,
     "messages queued for this domain and its subdomains at most; 0: no limit; unset: global"},
    {"max_queue_bytes", T_SIZE, NULL, D(max_queue_bytes), G(max_queue_bytes), 0, (uint64_t)1 << 50,
     F_INHERIT,
     "bytes queued for this domain and its subdomains at most; 0: no limit; unset: global"},
    {"notify", T_MAILBOX, NULL, D(notify), 0, 0, 0, F_OPTIONAL,
     "held domain: mail this address when mail starts waiting (and every notify_interval)"},
    {"etrn_access", T_NETS, NULL, D(etrn_access), D(netrn_access), 0, 0, F_INHERIT,
     "who may ETRN this domain: any, or auth and/or addresses and networks; unset: global"},
    {"recipients", T_PATH, NULL, D(recipients_file), 0, 0, 0, F_OPTIONAL | F_READ,
     "file of valid recipients, local@domain or @domain per line; empty: accept any"},
};

const struct cfg_key config_queue_keys[] = {
    {"domains", T_DOMAINS, NULL, Q(domains), Q(ndomains), 0, 0, F_REQUIRED,
     "the relay domains ETRN #NAME starts delivery for"},
};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))
const size_t config_nglobal = NKEYS(config_global_keys);
const size_t config_ndomain = NKEYS(config_domain_keys);
const size_t config_nqueue = NKEYS(config_queue_keys);
/* The parser sizes its per-key bookkeeping with CFG_MAX_KEYS. */
_Static_assert(NKEYS(config_global_keys) <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");
_Static_assert(NKEYS(config_domain_keys) <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");
_Static_assert(NKEYS(config_queue_keys) <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");
