-- 004-usage: what each recipient domain holds in the queue, kept current by
-- triggers in the same transaction as every change to it (issue 11:
-- per-domain quotas; and summary/domains need not count a million rows).
-- Applied once by relayd/store.c after 003. Never edit a file that has
-- shipped: add the next number.
--
-- messages: messages with a recipient in the domain (a message for two
-- domains counts once in each), recipients: its recipients, bytes: the size
-- of those messages. A row stays when it drops to zero, so its id is a
-- stable handle for the store's cache of this table.
CREATE TABLE domain_usage (
    id         INTEGER PRIMARY KEY,
    domain     TEXT    NOT NULL UNIQUE,
    messages   INTEGER NOT NULL DEFAULT 0,
    recipients INTEGER NOT NULL DEFAULT 0,
    bytes      INTEGER NOT NULL DEFAULT 0
);

INSERT INTO domain_usage (domain, messages, recipients, bytes)
SELECT r.domain, count(DISTINCT r.message_id), count(*),
       (SELECT coalesce(sum(m.size), 0) FROM message m
        WHERE m.id IN (SELECT message_id FROM recipient WHERE domain = r.domain))
FROM recipient r GROUP BY r.domain;

-- A recipient added: the message counts for its domain if it is the first
-- of that message there. Messages are inserted before their recipients.
CREATE TRIGGER domain_usage_rcpt_insert AFTER INSERT ON recipient
BEGIN
    INSERT INTO domain_usage (domain) VALUES (NEW.domain) ON CONFLICT (domain) DO NOTHING;
    UPDATE domain_usage SET
        recipients = recipients + 1,
        messages = messages + first,
        bytes = bytes + first * (SELECT size FROM message WHERE id = NEW.message_id)
    FROM (SELECT NOT EXISTS (SELECT 1 FROM recipient
                             WHERE message_id = NEW.message_id AND domain = NEW.domain
                               AND id <> NEW.id) AS first)
    WHERE domain = NEW.domain;
END;

-- A recipient removed (delivered, bounced, deleted): the message stops
-- counting for the domain with its last recipient there.
CREATE TRIGGER domain_usage_rcpt_delete AFTER DELETE ON recipient
BEGIN
    UPDATE domain_usage SET
        recipients = recipients - 1,
        messages = messages - last,
        bytes = bytes - last * coalesce((SELECT size FROM message WHERE id = OLD.message_id), 0)
    FROM (SELECT NOT EXISTS (SELECT 1 FROM recipient
                             WHERE message_id = OLD.message_id AND domain = OLD.domain) AS last)
    WHERE domain = OLD.domain;
END;

-- A message deleted whole: its recipients go first, while the message (and
-- its size) is still there for the trigger above; the cascade then finds none.
CREATE TRIGGER domain_usage_message_delete BEFORE DELETE ON message
BEGIN
    DELETE FROM recipient WHERE message_id = OLD.id;
END;
