"""Sources and sinks: format detection, column selection, chunked reading, outputs.

Kept free of heavy imports: the CLI reads ``STDIN_TOKEN`` from here at start-up.
"""

STDIN_TOKEN = "<stdin>"  # `-:COL` arrives as `<stdin>:COL` (the CLI rewrites it before parsing)
