"""cloudmfa: password plus second-factor authentication, run in your own cloud account."""

__version__ = "0.1.0"
