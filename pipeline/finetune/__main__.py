"""`python -m pipeline.finetune ...`: the finetune stage's command line."""

from pipeline.finetune import main

main()
