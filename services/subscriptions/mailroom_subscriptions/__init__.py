"""subscriptions: the public unsubscribe (RFC 8058 one-click) and preferences pages."""
