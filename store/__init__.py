"""The bottom layer: settings types, schema, trajectories, feedback, keys, skills, registry.

Nothing here imports the rest of molt.
"""
