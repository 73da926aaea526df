"""The ``triplane-gan`` command line (tools around training; training itself is ``ns-train``)."""
