"""`python -m pipeline.pretrain ...` (also what torchrun's ranks run)."""

from pipeline.pretrain.cli import main

main()
