"""API keys: bearer tokens `flm_<prefix>_<secret>` with scopes; only a hash of the secret is stored."""
