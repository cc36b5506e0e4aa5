"""Operating the switch: the configuration file, admin HTTP, development PKI.

Owns reading and validating the TOML configuration (`config`, `settings`, `routes`), the admin
HTTP server (`/metrics`, `/healthz`, `/readyz`) and the development certificates. It
builds every other package's options, so only the wiring (`switch.app`, `switch.cli`)
imports it.
"""
