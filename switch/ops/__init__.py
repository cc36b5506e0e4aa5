"""Operating the switch: the configuration file, admin HTTP, development PKI, reconciliation and reports.

Owns the TOML configuration (`schema` defines every key once; `config` validates a file
and builds the runtime options; `settings` words errors; `routes` builds the router;
`reference` prints the README's tables from the schema), the admin
HTTP server (`/metrics`, `/healthz`, `/readyz`, `/reports/settlement`), the development
certificates, reconciliation by file (`reconcile`) and settlement reports (`reports`), both from
the movements of a business date (`daybook`), and their commands (`settlementcli`). It
builds every other package's options, so only the wiring (`switch.app`, `switch.cli`)
imports it.
"""
