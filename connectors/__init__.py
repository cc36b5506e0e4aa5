"""Bank-specific connector plugins: what a dialect file cannot express."""
