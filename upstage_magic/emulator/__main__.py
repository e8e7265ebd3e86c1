"""``python -m upstage_magic.emulator --port 8765``."""
from . import main

main()
