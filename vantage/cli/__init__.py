"""The ``vantage`` command-line interface (entry point: :func:`vantage.cli.main.main`)."""
