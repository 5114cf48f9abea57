-- 001-initial: the queue of DESIGN §5. relayd/store.c applies each numbered
-- file once, in its own transaction, and then sets PRAGMA user_version to the
-- file's number. Never edit a file that has shipped: add the next number.

-- One row per accepted message: the envelope as given in MAIL FROM (RFC 5321
-- §4.1.1.2, DSN parameters of RFC 3461 §4.3/§4.4) and where it came from.
CREATE TABLE message (
    id          INTEGER PRIMARY KEY,
    queue_id    TEXT    NOT NULL UNIQUE,
    arrival     INTEGER NOT NULL,            -- unix time
    sender      TEXT    NOT NULL,            -- '' for the null sender <>
    envid       TEXT,                        -- RFC 3461 ENVID (xtext) or NULL
    dsn_ret     INTEGER NOT NULL DEFAULT 0,  -- RFC 3461 RET (enum smtp_ret)
    body_8bit   INTEGER NOT NULL DEFAULT 0,  -- RFC 6152 BODY=8BITMIME given
    size        INTEGER NOT NULL,            -- bytes in message_body.data
    client_addr TEXT,
    client_helo TEXT
);

-- The body exactly as it will be delivered, stored once however many
-- recipients the message has.
CREATE TABLE message_body (
    message_id INTEGER PRIMARY KEY REFERENCES message(id) ON DELETE CASCADE,
    data       BLOB NOT NULL
);

-- One row per recipient still to be delivered. state: 0 queued (later
-- numbers: delivering, held, ...). next_attempt is unix time, 0 = now.
CREATE TABLE recipient (
    id           INTEGER PRIMARY KEY,
    message_id   INTEGER NOT NULL REFERENCES message(id) ON DELETE CASCADE,
    domain       TEXT    NOT NULL,           -- normalised, lower case
    address      TEXT    NOT NULL,
    orcpt        TEXT,                       -- RFC 3461 ORCPT as given
    notify       INTEGER NOT NULL DEFAULT 0, -- SMTP_NOTIFY_* bits
    state        INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0,
    last_reply   TEXT
);
-- An ETRN for one domain (RFC 1985) touches only that domain's rows.
CREATE INDEX recipient_domain_state ON recipient (domain, state, next_attempt);
-- ON DELETE CASCADE and "is this message finished?" look recipients up by message.
CREATE INDEX recipient_message ON recipient (message_id);

-- What relayd remembers about each relay domain between deliveries.
CREATE TABLE domain_state (
    domain        TEXT PRIMARY KEY,
    last_etrn     INTEGER,
    last_delivery INTEGER,
    last_error    TEXT,
    held          INTEGER NOT NULL DEFAULT 0
);
