"""Operating the switch: the configuration file, admin HTTP, development PKI.

Owns the TOML configuration (`schema` defines every key once; `config` validates a file
and builds the runtime options; `settings` words errors; `routes` builds the router;
`reference` prints the README's tables from the schema), the admin
HTTP server (`/metrics`, `/healthz`, `/readyz`) and the development certificates. It
builds every other package's options, so only the wiring (`switch.app`, `switch.cli`)
imports it.
"""
