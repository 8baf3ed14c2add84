"""Other ways to run `icm propagate` than the local streaming pipeline (``--engine``).

Each engine is imported only when chosen, so the local path pays nothing for them.
"""
