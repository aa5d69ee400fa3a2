"""After-search tools: report, compare, retrain an exported configuration, export, occlusion
maps. Each is a sub-command of ``launch.py``; its flags live in :mod:`cli`."""
