"""Helpers every layer uses: atomic writes of user artifacts and file hashes (:mod:`.fsutil`),
progress lines on stderr (:mod:`.progress`), argparse with deformrt's usage errors (:mod:`.usage`). Imports nothing
from deformrt but ``models.errors``."""
