"""What every writer of contacts shares (CSV import, `contacts subscribe`, the CRM's events)."""

from __future__ import annotations

# Held (pg_advisory_xact_lock) by every transaction that matches contacts by address: one
# import, subscription or contact.upserted batch at a time, so two never create the same
# address twice.
CONTACTS_LOCK = 0x696D706F7274
