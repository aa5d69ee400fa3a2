"""The command line: ``launch.py`` flags and sub-commands (:mod:`cli.main`)."""
