"""Who may call what: API keys and their scopes, TLS."""
