-- The CRM's own id of a contact: contact.upserted and contact.erased name contacts by it, and
-- the activity sent back to the CRM carries it. NULL for contacts that came another way
-- (CSV import, `contacts subscribe`); one Mailroom contact per CRM id.
ALTER TABLE contacts ADD COLUMN crm_id text;
CREATE UNIQUE INDEX contacts_crm_id ON contacts (crm_id) WHERE crm_id IS NOT NULL;
