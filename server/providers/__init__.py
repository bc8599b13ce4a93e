"""One adapter per provider, each on its official SDK. The only place an SDK is imported."""
