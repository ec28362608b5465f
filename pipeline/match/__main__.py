"""`python -m pipeline.match ...`: the match stage's command line."""

from pipeline.match import main

main()
