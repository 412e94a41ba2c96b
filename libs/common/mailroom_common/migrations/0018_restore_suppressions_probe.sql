-- The trigger of 0015 that gives an erased address back its plain suppression deleted the
-- hashed suppression through a hash of the whole suppressions table (a million plain ones:
-- a full scan on every contacts write while any hashed one exists). It now reads the hashed
-- ones only (their partial index), as it does to find them.
CREATE OR REPLACE FUNCTION contacts_restore_hashed_suppressions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM suppressions WHERE email LIKE 'sha256:%') THEN
        -- the few hashed suppressions in a hash table, probed with each written row's hash:
        -- never a probe of the suppressions' index per row, nor a sort of the rows
        WITH hashed AS MATERIALIZED (
            SELECT email FROM suppressions WHERE email LIKE 'sha256:%'),
        back AS (
            SELECT DISTINCT lower(w.email) AS address, h.email AS hash
            FROM written_contacts w JOIN hashed h ON h.email = mailroom_address_hash(w.email)
            WHERE w.erased_at IS NULL),
        restored AS (
            DELETE FROM suppressions s USING back b
            WHERE s.email = b.hash AND s.email LIKE 'sha256:%'
            RETURNING b.address, s.reason, s.detail, s.created_at)
        INSERT INTO suppressions (email, reason, detail, created_at)
        SELECT address, reason, detail, created_at FROM restored
        ON CONFLICT (email) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
