-- The bounce processor: every message of the bounce mailbox once, what bounced, what could not be read.

-- One row per message taken from the bounce mailbox (SHA-256 of its raw bytes), written in the
-- same transaction as its effects: a message seen again (deleted too late, a crash between the
-- commit and the IMAP delete, two replicas) is recognised and only deleted.
CREATE TABLE processed_messages (
    digest       text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    outcome      text NOT NULL CHECK (outcome IN ('bounce', 'not_bounce', 'unparsed')),
    size         integer NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- One row per bounced recipient of a message (hard, soft, delayed warnings, complaints).
CREATE TABLE bounces (
    id          bigserial PRIMARY KEY,
    item_id     bigint REFERENCES campaign_items (id) ON DELETE SET NULL,
    campaign_id bigint REFERENCES campaigns (id) ON DELETE SET NULL,
    email       text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
    action      text CHECK (action IN ('failed', 'delayed')),
    status      text,
    diagnostic  text,
    matched_by  text CHECK (matched_by IN ('verp', 'message_id', 'item_header', 'recipient')),
    suppressed  boolean NOT NULL DEFAULT false,
    digest      text NOT NULL REFERENCES processed_messages (digest),
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bounces_email ON bounces (lower(email), received_at DESC);
CREATE INDEX bounces_item ON bounces (item_id);

-- Messages the processor could not make sense of, kept for a person to look at.
CREATE TABLE unparsed_messages (
    digest      text PRIMARY KEY REFERENCES processed_messages (digest),
    size        integer NOT NULL,
    head        bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
