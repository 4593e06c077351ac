"""mpfota internals: HTTP client, slot writer, persisted state, boot confirmation."""
