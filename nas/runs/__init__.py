"""Run folders and what a long run needs: atomic files (safetensors + JSON), the progress display, Ctrl-C that finishes the unit under way."""
