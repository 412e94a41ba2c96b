-- Contacts, lists, suppressions, campaigns, campaign items, settings.

CREATE TABLE contacts (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL,
    first_name  text NOT NULL DEFAULT '',
    last_name   text NOT NULL DEFAULT '',
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    email_valid boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- A CRM may hold several contacts with one address; campaigns de-duplicate by address.
CREATE INDEX contacts_email_lower ON contacts (lower(email));

CREATE TABLE lists (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE list_memberships (
    list_id    bigint NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status     text NOT NULL DEFAULT 'subscribed'
               CHECK (status IN ('subscribed', 'unsubscribed', 'unconfirmed')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, contact_id)
);
CREATE INDEX list_memberships_contact ON list_memberships (contact_id);

-- Addresses nobody sends to again (lower-cased).
CREATE TABLE suppressions (
    email      text PRIMARY KEY CHECK (email = lower(email)),
    reason     text NOT NULL
               CHECK (reason IN ('hard_bounce', 'soft_bounces', 'complaint', 'unsubscribed', 'manual')),
    detail     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL,
    subject          text NOT NULL,
    from_name        text NOT NULL DEFAULT '',
    from_email       text NOT NULL,
    reply_to         text,
    html_template    text NOT NULL,
    text_template    text,
    status           text NOT NULL DEFAULT 'draft'
                     CHECK (status IN ('draft', 'scheduled', 'generating', 'sending', 'paused',
                                       'cancelled', 'completed', 'failed')),
    -- the status a paused campaign returns to on resume
    paused_from      text,
    send_at          timestamptz,
    generation_done  boolean NOT NULL DEFAULT false,
    cursor_email     text,
    lease_owner      text,
    lease_until      timestamptz,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    launched_at      timestamptz,
    generated_at     timestamptz,
    completed_at     timestamptz
);
CREATE INDEX campaigns_active ON campaigns (status) WHERE status IN ('scheduled', 'generating', 'sending');

CREATE TABLE campaign_lists (
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    list_id     bigint NOT NULL REFERENCES lists (id),
    PRIMARY KEY (campaign_id, list_id)
);

-- One page of items handed to the message processor; unpublished pages are handed over again.
CREATE TABLE item_pages (
    id           bigserial PRIMARY KEY,
    campaign_id  bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    item_count   integer NOT NULL,
    published_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX item_pages_unpublished ON item_pages (created_at) WHERE published_at IS NULL;

CREATE TABLE campaign_items (
    id          bigserial PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id  bigint NOT NULL REFERENCES contacts (id),
    page_id     bigint REFERENCES item_pages (id),
    email       text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'queued', 'sending', 'sent', 'retry', 'failed',
                                  'suppressed', 'skipped', 'bounced')),
    attempts    integer NOT NULL DEFAULT 0,
    smtp_code   integer,
    smtp_reply  text,
    error       text,
    bounce_kind text CHECK (bounce_kind IN ('hard', 'soft')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
-- One item per campaign and address: a repeated or redelivered launch never adds a second.
CREATE UNIQUE INDEX campaign_items_one_per_address ON campaign_items (campaign_id, lower(email));
CREATE INDEX campaign_items_open ON campaign_items (campaign_id)
    WHERE status IN ('pending', 'queued', 'sending', 'retry');
CREATE INDEX campaign_items_email ON campaign_items (lower(email), sent_at DESC);

-- The item status state machine: anything else is a bug, refused loudly.
CREATE FUNCTION campaign_item_transition_allowed(old_status text, new_status text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT old_status = new_status OR (old_status, new_status) IN (
        ('pending', 'queued'), ('pending', 'sending'), ('pending', 'suppressed'), ('pending', 'skipped'), ('pending', 'failed'),
        ('queued', 'sending'), ('queued', 'suppressed'), ('queued', 'skipped'), ('queued', 'failed'),
        ('sending', 'sent'), ('sending', 'retry'), ('sending', 'failed'), ('sending', 'suppressed'),
        ('sending', 'skipped'),
        ('retry', 'sending'), ('retry', 'failed'), ('retry', 'suppressed'), ('retry', 'skipped'),
        ('sent', 'bounced'), ('failed', 'bounced')
    )
$$;

-- Shared by every table of items (campaign items, autoresponder items).
CREATE FUNCTION item_status_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT campaign_item_transition_allowed(OLD.status, NEW.status) THEN
        RAISE EXCEPTION '% %: status % -> % is not allowed',
            TG_TABLE_NAME, OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER campaign_items_transition BEFORE UPDATE OF status ON campaign_items
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION item_status_check_transition();

-- Runtime settings owned by the config service: one row per group (smtp, marketing, bounce).
CREATE TABLE settings (
    group_name text PRIMARY KEY,
    value      jsonb NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    updated_by text NOT NULL DEFAULT 'system',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE settings_history (
    group_name   text NOT NULL,
    version      integer NOT NULL,
    changed_keys text[] NOT NULL,
    changed_by   text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, version)
);

-- Token buckets shared by every replica (e.g. the SMTP account's messages per second).
CREATE TABLE rate_limits (
    name       text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
