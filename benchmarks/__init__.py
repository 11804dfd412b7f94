"""Measurement and development drivers, each a module with its command line, run from a checkout of the repository
(they use its tools/, tests/ and configs/); they are not part of the installed package."""
