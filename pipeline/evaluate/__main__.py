"""`python -m pipeline.evaluate ...`: the evaluate stage's command line."""

from pipeline.evaluate import main

main()
