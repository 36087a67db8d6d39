"""Shared fixtures: the kernel's pytest plugin (botcriptofy.testing) is loaded through its entry point."""
