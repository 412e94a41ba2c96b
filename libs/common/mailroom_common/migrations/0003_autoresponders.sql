-- Autoresponders: emails sent once per contact and triggering event, after a delay.

CREATE TABLE autoresponders (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    trigger_kind  text NOT NULL CHECK (trigger_kind IN ('contact.subscribed', 'contact.event')),
    list_id       bigint REFERENCES lists (id) ON DELETE CASCADE,
    event_type    text,
    delay_seconds integer NOT NULL DEFAULT 0 CHECK (delay_seconds BETWEEN 0 AND 365 * 86400),
    subject       text NOT NULL,
    from_name     text,   -- NULL: the global SMTP account's
    from_email    text,   -- NULL: the global SMTP account's
    reply_to      text,
    html_template text NOT NULL,
    text_template text,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((trigger_kind = 'contact.subscribed' AND list_id IS NOT NULL AND event_type IS NULL)
        OR (trigger_kind = 'contact.event' AND event_type IS NOT NULL AND list_id IS NULL))
);
CREATE INDEX autoresponders_on_list ON autoresponders (list_id)
    WHERE enabled AND trigger_kind = 'contact.subscribed';
CREATE INDEX autoresponders_on_event ON autoresponders (event_type)
    WHERE enabled AND trigger_kind = 'contact.event';

CREATE TABLE autoresponder_items (
    id               bigserial PRIMARY KEY,
    autoresponder_id bigint NOT NULL REFERENCES autoresponders (id) ON DELETE CASCADE,
    contact_id       bigint NOT NULL REFERENCES contacts (id),
    event_id         text NOT NULL,
    email            text NOT NULL,
    data             jsonb NOT NULL DEFAULT '{}'::jsonb,
    due_at           timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'queued', 'sending', 'sent', 'retry', 'failed',
                                       'suppressed', 'skipped', 'bounced')),
    attempts         integer NOT NULL DEFAULT 0,
    smtp_code        integer,
    smtp_reply       text,
    error            text,
    bounce_kind      text CHECK (bounce_kind IN ('hard', 'soft')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
-- One email per autoresponder, contact and triggering event: a redelivered or repeated
-- event never produces a second.
CREATE UNIQUE INDEX autoresponder_items_once
    ON autoresponder_items (autoresponder_id, contact_id, event_id);
-- What the scheduler looks at: the pending rows, by due time.
CREATE INDEX autoresponder_items_due ON autoresponder_items (due_at) WHERE status = 'pending';
CREATE INDEX autoresponder_items_email ON autoresponder_items (lower(email), sent_at DESC);

-- The same state machine as campaign items.
CREATE TRIGGER autoresponder_items_transition BEFORE UPDATE OF status ON autoresponder_items
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION item_status_check_transition();
