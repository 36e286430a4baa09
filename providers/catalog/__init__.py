"""One module per provider; each exposes `SPECS` (see `providers.spec.ProviderSpec`)."""
