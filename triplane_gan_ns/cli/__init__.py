"""The ``triplane-gan`` command line (tools around training; training itself is ``ns-train``): one module per
subcommand, named after it, that parses its options and calls the library function doing the work; ``main.py``
assembles them."""
