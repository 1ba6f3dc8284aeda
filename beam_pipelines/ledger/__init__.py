"""The dual ledger: our computed cost beside the provider's own bill, per org, provider and day."""
