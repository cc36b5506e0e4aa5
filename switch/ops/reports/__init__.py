"""Settlement reports from the journal: what each bank settles, each merchant is paid and the gateway earns
on a business date.

Why a package of its own: the CLI (`kswitch report settlement`) and the admin HTTP server
(``/reports/settlement``) serve the same report, so both call `build` (journal rows to
numbers, through `switch.domain.settlement`) and `render` (numbers to table, CSV, JSON or
xlsx); neither has a line of its own arithmetic.
"""
