"""config: the authenticated admin API of the runtime settings (SMTP, marketing, bounce)."""
