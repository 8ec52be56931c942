"""Credit Exchange: signed, schema-validated exchange of enterprise credit records."""

__version__ = "0.1.0"
