"""`python -m pipeline.embed ...`: the embed stage's command line."""

from pipeline.embed import main

main()
