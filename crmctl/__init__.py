"""crmctl: a command-line CRM toolkit for data operations."""

__version__ = "0.1.0"
