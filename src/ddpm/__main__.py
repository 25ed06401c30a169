"""``python -m ddpm`` (what ``torchrun -m ddpm`` runs) is the ``ddpm`` command."""

from .cli import main

raise SystemExit(main())
