"""bounce_processor: the Process Bounce Email Job (the IMAP bounce mailbox)."""
