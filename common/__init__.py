"""The bottom layer: errors every layer may raise, and path checks. Imports nothing of ours."""
