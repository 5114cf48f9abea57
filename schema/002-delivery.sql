-- 002-delivery: what delivery, bounces and ETRN need (issue 3). Applied once
-- by relayd/store.c after 001, in its own transaction. Never edit a file that
-- has shipped: add the next number.

-- A delay warning (RFC 3464 Action: delayed) goes out once per recipient.
ALTER TABLE recipient ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;

-- The recipient's domain reversed character by character ("gro.elpmaxe" for
-- example.org), written by store.c with every recipient. A domain and all the
-- domains below it are then one key range (ETRN @domain, RFC 1985 §5) with no
-- LIKE pattern to escape, and with message_id in the index a delivery fetch
-- pages through one domain in message order without sorting it and without
-- touching other domains' rows.
ALTER TABLE recipient ADD COLUMN rdomain TEXT NOT NULL DEFAULT '';
-- Queues written by 001: reverse what is there. substr/length count
-- characters, as store.c's reversal does.
UPDATE recipient SET rdomain = (
    WITH RECURSIVE c(i, s) AS (
        SELECT length(recipient.domain), ''
        UNION ALL
        SELECT i - 1, s || substr(recipient.domain, i, 1) FROM c WHERE i > 0
    )
    SELECT s FROM c WHERE i = 0
);
CREATE INDEX recipient_rdomain ON recipient (rdomain, state, message_id);

-- When the last error of a domain happened (last_error says what it was).
ALTER TABLE domain_state ADD COLUMN last_error_at INTEGER;
