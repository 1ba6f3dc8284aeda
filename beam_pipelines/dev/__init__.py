"""Developer conveniences for the embedded default (refused in production)."""
