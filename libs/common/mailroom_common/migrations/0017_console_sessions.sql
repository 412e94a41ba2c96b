-- The administrator's console (config service): signed-in sessions, kept here so that every
-- replica of the config service knows them and signing out ends a session everywhere. Only
-- the SHA-256 digest of a session's secret is stored (the browser holds the secret).
CREATE TABLE console_sessions (
    digest       bytea PRIMARY KEY,
    actor        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- Unsubscribes that came from a campaign's links (the subscriptions service counts them), for
-- the console's campaign list: one counter per campaign, never a scan of its contacts.
ALTER TABLE campaigns ADD COLUMN unsubscribes bigint NOT NULL DEFAULT 0;
