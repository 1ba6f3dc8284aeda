"""Provider API clients. All HTTP concerns live in ``http.ProviderClient``; providers are thin."""
