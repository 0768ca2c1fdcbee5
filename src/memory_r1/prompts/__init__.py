"""Versioned prompt templates, rendered by pure functions.

Each module holds one prompt: its `VERSION` (recorded in every history row and result) and a `render`
function that returns chat messages. Change the wording -> bump the version. All text is our own.
"""
