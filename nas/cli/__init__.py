"""The `nas` command line: its parser and its commands."""
