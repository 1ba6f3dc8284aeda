"""Rules about runs that every entry point shares: admission, leases, reaping dead owners."""
