-- The one address check of the database: which stored addresses may be recipients. The item
-- generator's snapshot and the autoresponder scheduler both call it (beside the CRM's flag
-- contacts.email_valid, which nothing of ours sets to false and which defaults to true).
--
-- It matches the shape of every address mailroom_common.addresses.checked_address stores
-- (CSV import, subscribe): no whitespace, one @-sign, a dot in the domain. It is the part of
-- that check that still matters for contacts written by anyone else (the CRM, scripts):
-- an address without that shape is not a recipient, and is left out. It accepts more than
-- checked_address (reserved domains such as .test, non-ASCII addresses); an item for such an
-- address reaches the renderer, which fails it with its reason (rendering.headers.
-- valid_address), so that the marketer sees it in the campaign's counts.
--
-- Plain SQL, IMMUTABLE and not STRICT: the planner inlines it into the calling statement,
-- so the snapshot of a million contacts costs what the regular expression written there did.
CREATE FUNCTION mailroom_address_ok(email text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' $$;
