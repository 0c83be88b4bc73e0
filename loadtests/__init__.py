"""Load tools: Locust scenarios and the ``seatlock bench`` harness; never imported at run time."""
